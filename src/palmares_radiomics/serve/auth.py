"""Who may see and upload what: one token per radiologist or centre, scoped to a site.

The token file has one line per token, ``SITE TOKEN`` (``*`` as SITE for the coordinating centre, who
sees every site); blank lines and lines starting with ``#`` are ignored. A token is compared with
every known token with :func:`hmac.compare_digest`, whose time does not depend on where two tokens first
differ (it may on their lengths, which tell nothing about random tokens of 20 characters or more). Tokens shorter than :data:`MIN_TOKEN_LENGTH`
characters are refused when the file is read: a guessable token on a hospital network is worse than none.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

ALL_SITES = "*"
#: 20 characters of ``secrets.token_urlsafe`` carry 120 bits.
MIN_TOKEN_LENGTH = 20
_SITE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class Tokens:
    """The tokens of a token file: (site, token) pairs."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def read(cls, path: Path) -> Tokens:
        """Read and check a token file; ConfigError naming the line (never the token) when it is wrong."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the token file cannot be read ({type(exc).__name__})") from None
        pairs = []
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 2:
                raise ConfigError(f"token file line {number}: expected 'SITE TOKEN' (two fields), found {len(fields)}")
            site, token = fields
            if site != ALL_SITES and not _SITE.match(site):
                raise ConfigError(f"token file line {number}: the site must be a site code (letters, digits, '-', "
                                  "'_') or '*' for the coordinating centre")
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"token file line {number}: the token is shorter than {MIN_TOKEN_LENGTH} characters; "
                                  "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
            pairs.append((site.upper() if site != ALL_SITES else site, token))
        if not pairs:
            raise ConfigError("the token file holds no 'SITE TOKEN' line")
        tokens = [t for _, t in pairs]
        if len(set(tokens)) < len(tokens):
            raise ConfigError("the token file gives one token to two lines: each radiologist or centre needs its own")
        return cls(tuple(pairs))

    def site_of(self, token: str | None) -> str | None:
        """The site a token opens (``*`` for every site), or None; every known token is compared, in constant time."""
        found = None
        given = (token or "").encode("utf-8", "surrogateescape")
        for site, known in self.pairs:
            if hmac.compare_digest(given, known.encode("utf-8")):
                found = site
        return found


def allows(scope: str | None, site: str) -> bool:
    """True when a request whose token opens ``scope`` may see ``site``'s patients (no token file: every site)."""
    return scope is None or scope == ALL_SITES or scope == site
