"""Sizes and durations as people write them: ``1KiB``, ``64 MiB``, ``4096``; ``60s``, ``500ms``."""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = ["format_duration", "format_size", "parse_duration", "parse_rate", "parse_size"]

_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse ``"256MiB"`` into 268435456. Raises :class:`ValueError` naming the bad text."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"not a size: {text!r} (write a number with an optional unit: "
            "B, KiB, MiB, GiB, KB, MB, GB)"
        )
    value = Decimal(match.group(1)) * _UNITS[unit]
    if value != value.to_integral_value():
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def format_size(size: int) -> str:
    """``268435456`` → ``"256 MiB"``; exact binary units where they fit, else one decimal."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            if size % scale == 0:
                return f"{size // scale} {unit}"
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")


def parse_duration(text: str | float) -> float:
    """Parse ``"60s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a bare number of seconds into
    seconds. Raises :class:`ValueError` naming the bad text."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"not a duration: {text!r} (a finite number of seconds, ≥ 0)")
        return float(text)
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"not a duration: {text!r} (write a number with an optional unit: ms, s, m, h)"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or ""]


_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?bit)(?:/s|ps)?\s*", re.IGNORECASE)


def parse_rate(text: str) -> int:
    """Parse a link rate as ``tc`` writes it — ``"10gbit"``, ``"500mbit"``, ``"2.5Gbit/s"`` —
    into bits per second (decimal units, as network rates are). Raises :class:`ValueError`."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a rate: {text!r} (write e.g. 10gbit, 500mbit)")
    bits = int(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
    if bits <= 0:
        raise ValueError(f"not a rate: {text!r} (more than 0)")
    return bits


def format_duration(seconds: float) -> str:
    """``0.0123`` → ``"12.30 ms"``; ``2.5`` → ``"2.50 s"``; microseconds below a millisecond."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
