"""Durations, sizes and CPU counts parse as Docker parses them."""
import pytest
from hypothesis import given, strategies as st

from shoal.units import parse_bytes, parse_duration, parse_nano_cpus


@pytest.mark.parametrize("text,seconds", [
    ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("2us", 2e-6), ("2µs", 2e-6),
    ("3ns", 3e-9), ("0", 0.0), (0, 0.0), ("1.5h", 5400.0), (".5s", 0.5), ("1h2m3s", 3723.0), ("-1s", -1.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,message", [
    ("10", 'missing unit in duration "10"'), ("1h30", 'missing unit in duration "1h30"'),
    ("5x", 'unknown unit "x" in duration "5x"'), ("abc", 'invalid duration "abc"'), ("", 'invalid duration ""'),
    (30, 'missing unit in duration "30"'), (".s", 'invalid duration ".s"'),
])
def test_bad_durations(text, message):
    with pytest.raises(ValueError) as exc:
        parse_duration(text)
    assert str(exc.value) == message


@pytest.mark.parametrize("text,size", [
    ("100M", 104857600), ("100m", 104857600), ("1.5G", 1610612736), ("512k", 524288), (1024, 1024),
    ("75M", 78643200), ("100MiB", 104857600), ("100 MB", 104857600), ("10b", 10), ("2g", 2 << 30), ("7", 7),
])
def test_sizes(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["1x", "M", "1.2.3", "-1", -5, "", True])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


@pytest.mark.parametrize("text,nano", [("0.50", 500_000_000), ("1", 10**9), (0.75, 750_000_000), ("2.000000001", 2_000_000_001)])
def test_cpus(text, nano):
    assert parse_nano_cpus(text) == nano


@pytest.mark.parametrize("text", ["1e-10", "abc", "-1"])
def test_bad_cpus(text):
    with pytest.raises(ValueError):
        parse_nano_cpus(text)


@given(h=st.integers(0, 99), m=st.integers(0, 59), s=st.integers(0, 59), ms=st.integers(0, 999))
def test_duration_components_add_up(h, m, s, ms):
    assert parse_duration(f"{h}h{m}m{s}s{ms}ms") == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


@given(n=st.integers(0, 10**6), unit=st.sampled_from(["", "k", "m", "g", "K", "M", "G"]))
def test_size_multipliers(n, unit):
    assert parse_bytes(f"{n}{unit}") == n * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]
