"""Validated reading of one filter mapping of ``palmares.filters``: every message names the file, the filter, the key,
the value found and the values allowed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

E = TypeVar("E", bound=Enum)


class BlockReader:
    """One mapping of ``palmares.filters``, read key by key; :meth:`finish` refuses the keys nobody asked for."""

    def __init__(self, mapping: Mapping[str, Any], path: str | Path, index: int, allowed: Collection[str]) -> None:
        self.mapping = mapping
        self.allowed = set(allowed)
        family = mapping.get("filter", "?")
        self.where = f"parameter file {path}: palmares.filters[{index}] ({family})"

    def error(self, message: str) -> ConfigError:
        """A :class:`ConfigError` about this filter."""
        return ConfigError(f"{self.where}: {message}")

    def _value(self, key: str, expected: str) -> Any:
        if key not in self.allowed:  # a programming error: the family forgot to list its key
            raise KeyError(key)
        if key not in self.mapping or self.mapping[key] is None:
            raise self.error(f"'{key}' is missing; give it explicitly ({expected})")
        return self.mapping[key]

    def choice(self, key: str, enum: type[E], allowed: Collection[E] | None = None) -> E:
        """An enumerated value, compared as text (YAML ``true`` is not ``"true"``)."""
        members = list(allowed if allowed is not None else enum)
        spelled = ", ".join(str(m.value) for m in members)
        value = self._value(key, f"one of {spelled}")
        for member in members:
            if isinstance(value, str) and value == member.value:
                return member
        raise self.error(f"'{key}' must be one of {spelled}. Found: {value!r}")

    def boolean(self, key: str) -> bool:
        """``true`` or ``false``."""
        value = self._value(key, "true or false")
        if not isinstance(value, bool):
            raise self.error(f"'{key}' must be true or false. Found: {value!r}")
        return value

    def number(self, key: str, *, minimum: float | None = None, exclusive: bool = True, unit: str = "") -> float:
        """A real number (an integer is accepted), above ``minimum`` (or at least ``minimum`` when not exclusive)."""
        bound = "" if minimum is None else f"{'>' if exclusive else '>='} {minimum:g}"
        expected = " ".join(p for p in ("a number", unit, bound) if p)
        value = self._value(key, expected)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise self.error(f"'{key}' must be {expected}. Found: {value!r}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise self.error(f"'{key}' must be {expected}. Found: {value!r}")
        return float(value)

    def integer(self, key: str, *, minimum: int, odd: bool = False, unit: str = "") -> int:
        """A whole number of at least ``minimum`` (odd when ``odd``)."""
        expected = " ".join(p for p in (f"an {'odd ' if odd else ''}integer", unit, f">= {minimum}") if p)
        value = self._value(key, expected)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (odd and value % 2 == 0):
            raise self.error(f"'{key}' must be {expected}. Found: {value!r}")
        return value

    def text(self, key: str, expected: str) -> str:
        """A string; its form is checked by the caller (``expected`` describes it in messages)."""
        value = self._value(key, expected)
        if not isinstance(value, str):
            raise self.error(f"'{key}' must be {expected}. Found: {value!r}")
        return value

    def absent_or(self, key: str, *values: Any) -> None:
        """Refuse ``key`` unless it is absent or has one of ``values`` (a setting that does not apply here)."""
        if key in self.mapping and self.mapping[key] not in values:
            raise self.error(f"'{key}' does not apply with these settings. Found: {self.mapping[key]!r}")

    def finish(self) -> None:
        """Refuse unknown keys, naming the keys this filter takes."""
        unknown = sorted(set(self.mapping) - self.allowed, key=str)
        if unknown:
            raise self.error(f"unknown key(s) {', '.join(map(repr, unknown))}; this filter takes "
                             f"{', '.join(sorted(self.allowed))}")
