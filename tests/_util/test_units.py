"""Byte sizes and durations as people write them (``xdt._util.units``)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdt._util.units import format_duration, format_size, parse_duration, parse_rate, parse_size

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1KiB", KiB),
        ("256MiB", 256 * MiB),
        ("64 KiB", 64 * KiB),
        ("1.5GiB", 3 * GiB // 2),
        ("4096", 4096),
        ("0", 0),
        ("  4096  ", 4096),
        ("\t16 MiB\n", 16 * MiB),
        ("10B", 10),
        ("10 b", 10),
        ("1kib", KiB),
        ("1KIB", KiB),
        ("2mib", 2 * MiB),
        ("3GiB", 3 * GiB),
        ("0.5KiB", 512),
        ("1.25KiB", 1280),
        ("1.0MiB", MiB),
        ("1KB", 1000),
        ("64kb", 64_000),
        ("2MB", 2_000_000),
        ("1.5KB", 1500),
        ("1GB", 1_000_000_000),
        ("007", 7),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    result = parse_size(text)
    assert result == size
    assert type(result) is int


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "KiB",
        "1 TiB",
        "1 KiBs",
        "1 K",
        "-1",
        "+1",
        "1e3",
        "1.KiB",
        ".5KiB",
        "1,5KiB",
        "1 2",
        "0x10",
        "1 Ki B",
    ],
)
def test_parse_size_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))) as info:
        parse_size(text)
    assert "not a size" in str(info.value)
    assert "KiB" in str(info.value)  # says what would have been understood


@pytest.mark.parametrize("text", ["1.5", "0.5B", "1.1KiB", "0.1MiB", "1.0001KB"])
def test_parse_size_rejects_fractions_of_a_byte(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))) as info:
        parse_size(text)
    assert "whole number of bytes" in str(info.value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (KiB, "1 KiB"),
        (1536, "1.5 KiB"),
        (64 * KiB, "64 KiB"),
        (MiB - 1, "1024.0 KiB"),
        (MiB, "1 MiB"),
        (256 * MiB, "256 MiB"),
        (256 * MiB + 1, "256.0 MiB"),
        (GiB, "1 GiB"),
        (3 * GiB // 2, "1.5 GiB"),
        (1 << 40, "1024 GiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 1 << 20),
    unit=st.sampled_from([("B", 1), ("KiB", KiB), ("MiB", MiB), ("GiB", GiB)]),
    space=st.sampled_from(["", " ", "  "]),
)
def test_parse_size_whole_units(count: int, unit: tuple[str, int], space: str) -> None:
    name, scale = unit
    assert parse_size(f"{count}{space}{name}") == count * scale
    assert parse_size(f"{count}{space}{name.upper()}") == count * scale


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 1023),
    scale=st.sampled_from([KiB, MiB, GiB]),
    gib=st.integers(0, 1 << 20),
)
def test_exact_binary_sizes_format_and_parse_back(count: int, scale: int, gib: int) -> None:
    size = count * scale if scale != GiB else (count + gib) * GiB
    text = format_size(size)
    assert re.fullmatch(r"\d+ (KiB|MiB|GiB)", text)
    assert parse_size(text) == size


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 1 << 50))
def test_format_size_is_close(size: int) -> None:
    text = format_size(size)
    number, unit = text.split(" ")
    scale = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB}[unit]
    assert size >= scale or unit == "B"
    assert abs(float(number) * scale - size) <= 0.0501 * scale  # one decimal, half to even


@pytest.mark.parametrize(
    ("text", "expected"),
    [("16.1KB", 16100), ("2.01MB", 2010000), ("9007199254740993", 9007199254740993)],
)
def test_decimal_sizes_are_exact(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("60s", 60.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0.25m", 15.0),
        ("10", 10.0),
        ("0", 0.0),
        ("0ms", 0.0),
        (" 5 s ", 5.0),
        ("\t30 ms\n", 0.03),
        (1.5, 1.5),
        (0, 0.0),
        (90, 90.0),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    result = parse_duration(value)
    assert result == pytest.approx(seconds)
    assert type(result) is float


@pytest.mark.parametrize(
    "text",
    ["-1", "abc", "5 days", "", "  ", "s", "1e3", ".5s", "5.s", "5S", "1 5s", "1h30m", "+1s"],
)
def test_parse_duration_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))) as info:
        parse_duration(text)
    assert "not a duration" in str(info.value)
    assert "ms, s, m, h" in str(info.value)  # says what would have been understood


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_booleans(value: bool) -> None:
    with pytest.raises(ValueError, match=f"not a duration: {value}"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-2, -0.5, float("nan"), float("inf"), float("-inf")])
def test_parse_duration_rejects_negative_and_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"not a duration: {value!r}")):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 µs"),
        (0.00025, "250 µs"),
        (0.000999, "999 µs"),
        (0.001, "1.00 ms"),
        (0.0123, "12.30 ms"),
        (0.5, "500.00 ms"),
        (1.0, "1.00 s"),
        (2.5, "2.50 s"),
        (120.0, "120.00 s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=200, deadline=None)
@given(milliseconds=st.integers(0, 10**7))
def test_whole_milliseconds_parse(milliseconds: int) -> None:
    assert parse_duration(f"{milliseconds}ms") == pytest.approx(milliseconds / 1000)
    assert parse_duration(f"{milliseconds} s") == milliseconds


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("10gbit", 10**10),
        ("500mbit", 5 * 10**8),
        ("2.5Gbit/s", 25 * 10**8),
        ("64kbit", 64000),
        (" 1 Gbitps ", 10**9),
        ("8bit", 8),
    ],
)
def test_parse_rate(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text", ["10", "10gb", "fast", "0gbit", "-1mbit", "1 GiB"])
def test_parse_rate_refuses_what_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)
