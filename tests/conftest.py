"""Shared fixtures: the read-only reference data in ../shared/data and a synthetic cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PALMARES_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the test outside CI when absent, fails it in CI (CI=true)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"reference data {path} is absent (expected ../shared/data beside the repository)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The root of the shared reference data."""
    return shared_path()


@pytest.fixture(scope="session")
def test_key() -> bytes:
    """A fixed 48-character study key for tests (never used for real data)."""
    return b"palmares-test-key-0123456789abcdefghijklmnopqrstuv"
