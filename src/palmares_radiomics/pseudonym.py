"""Keyed, deterministic identifiers: patient pseudonyms, DICOM UIDs and per-patient date shifts.

All three derive from one secret key with HMAC-SHA256, so the DICOM de-identifier and the
clinical export produce the same pseudonym without a linkage table in the clear. The key is
read from a file or an environment variable and is never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from .errors import KeyFileError

#: Crockford base-32 alphabet: no I, L, O, U, so pseudonyms read aloud and typed by hand survive.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PSEUDONYM_PREFIX = "PAL2-"
PSEUDONYM_LENGTH = 10
MIN_KEY_LENGTH = 32
#: Date shifts lie in [-DATE_SHIFT_MAX_DAYS, -DATE_SHIFT_MIN_DAYS]: always into the past, never zero.
DATE_SHIFT_MIN_DAYS = 30
DATE_SHIFT_MAX_DAYS = 1095


def load_key(key_file: str | os.PathLike[str] | None = None, key_env: str | None = None) -> bytes:
    """Read the pseudonymisation key from ``key_file`` or the environment variable ``key_env``.

    Refuses a missing or short key (fewer than 32 characters): de-identification with a weak key
    would make pseudonyms guessable from the public site code and patient id.
    """
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise KeyFileError(f"key file {path} does not exist: create it (e.g. `openssl rand -base64 48 > {path}`) "
                               "and keep it outside the results folder")
        key = path.read_bytes().strip()
        source = f"key file {path}"
    elif key_env:
        value = os.environ.get(key_env)
        if value is None:
            raise KeyFileError(f"environment variable {key_env} is not set: export the study key in it")
        key = value.strip().encode()
        source = f"environment variable {key_env}"
    else:
        raise KeyFileError("no key configured: set `key_file` or `key_env` in the config (--key-file on the command line)")
    if len(key) < MIN_KEY_LENGTH:
        raise KeyFileError(f"the key in {source} is {len(key)} characters long; at least {MIN_KEY_LENGTH} are required")
    return key


def _digest(key: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of ``value`` under ``key``, domain-separated by ``purpose``."""
    return hmac.new(key, f"{purpose}\x1f{value}".encode(), hashlib.sha256).digest()


def pseudonym(key: bytes, site: str, local_patient_id: str) -> str:
    """Pseudonym ``PAL2-XXXXXXXXXX`` of a patient: HMAC-SHA256(key, site + local id) in Crockford base-32.

    Site and id are stripped so that stray spaces in a clinical export do not change the pseudonym.
    """
    number = int.from_bytes(_digest(key, "patient", f"{site.strip()}\x1f{str(local_patient_id).strip()}"), "big")
    chars = []
    for _ in range(PSEUDONYM_LENGTH):
        number, rest = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[rest])
    return PSEUDONYM_PREFIX + "".join(chars)


def remap_uid(key: bytes, uid: str) -> str:
    """Replace a DICOM UID by a keyed, deterministic ``2.25.<decimal>`` UID (PS3.5 B.2, at most 64 characters).

    The same input UID always maps to the same output under the same key, so references between CT,
    PET, SEG and RTSTRUCT stay consistent across files and runs.
    """
    number = int.from_bytes(_digest(key, "uid", uid.strip().rstrip("\x00"))[:16], "big")
    return f"2.25.{number}"


def date_shift_days(key: bytes, patient_pseudonym: str) -> int:
    """Per-patient date shift in days (negative, between -1095 and -30), derived from the key and pseudonym."""
    span = DATE_SHIFT_MAX_DAYS - DATE_SHIFT_MIN_DAYS + 1
    number = int.from_bytes(_digest(key, "dateshift", patient_pseudonym)[:8], "big")
    return -(DATE_SHIFT_MIN_DAYS + number % span)
