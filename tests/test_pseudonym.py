"""Keyed pseudonyms, UIDs and date shifts."""

from __future__ import annotations

from pathlib import Path

import pytest

from palmares_radiomics.errors import KeyFileError
from palmares_radiomics.pseudonym import date_shift_days, load_key, pseudonym, remap_uid


def test_pseudonym_is_deterministic_readable_and_keyed(test_key: bytes) -> None:
    first = pseudonym(test_key, "IT01", "12345")
    assert first == pseudonym(test_key, " IT01", "12345 ")
    assert first.startswith("PAL2-") and len(first) == 15
    assert set(first[5:]) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert first != pseudonym(test_key, "IT02", "12345"), "site is part of the identity"
    assert first != pseudonym(test_key + b"x", "IT01", "12345"), "another key gives another pseudonym"


def test_uids_are_valid_and_consistent(test_key: bytes) -> None:
    uid = remap_uid(test_key, "1.2.840.113619.2.55.3.1234")
    assert uid == remap_uid(test_key, "1.2.840.113619.2.55.3.1234\x00")
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid[5:].isdigit()
    assert uid != remap_uid(test_key, "1.2.840.113619.2.55.3.1235")


def test_date_shift_is_negative_bounded_and_per_patient(test_key: bytes) -> None:
    shifts = {date_shift_days(test_key, pseudonym(test_key, "IT01", str(i))) for i in range(200)}
    assert all(-1095 <= s <= -30 for s in shifts)
    assert len(shifts) > 100


def test_key_loading_refuses_missing_and_short_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key(tmp_path / "absent.key")
    short = tmp_path / "short.key"
    short.write_text("tooshort")
    with pytest.raises(KeyFileError, match="8 characters long; at least 32"):
        load_key(short)
    with pytest.raises(KeyFileError, match="no key configured"):
        load_key()
    with pytest.raises(KeyFileError, match="PALMARES_TEST_KEY is not set"):
        load_key(key_env="PALMARES_TEST_KEY")
    monkeypatch.setenv("PALMARES_TEST_KEY", "k" * 40)
    assert load_key(key_env="PALMARES_TEST_KEY") == b"k" * 40
