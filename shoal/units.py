"""Durations, byte sizes and CPU counts, parsed the way Docker parses them.

Durations follow Go's ``time.ParseDuration`` ("1m30s", "500ms", "2us", "0"; a bare
number other than 0 has no unit and is refused, as in Go). Sizes follow Docker Compose
v2 (1024 multipliers: "100m", "100mb", "100MiB", ".5g", "1.5G", "1e3", "512 k"; plain
integers are bytes; "1Gi" and "100Q" are refused, as compose refuses them). CPUs follow
docker's ``ParseCPUs`` ("0.50" -> 500000000 nano-CPUs, exact arithmetic).

Every value is bounded before any arithmetic (a 310-digit duration, ``1e99999999`` CPUs):
a number too large for its field is refused with the field's range, never stored as
infinity, and never computed at a cost that grows with its exponent.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

__all__ = ["parse_duration", "parse_bytes", "parse_nano_cpus"]

_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),  # micro sign
    "\u03bcs": Decimal("1e-6"),  # Greek mu
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_DURATION_PART = re.compile(r"(\d*(?:\.\d*)?)([^\d.]+)")

_SIZE = re.compile(r"^((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?) ?(?:([kKmMgGtTpP])(?:[iI]?[bB])?|[bB])?$")
MAX_BYTES = 2**63 - 1
MAX_CPUS = 1 << 20  # a million CPUs: more than any machine; bounds the arithmetic
MAX_SECONDS = 365 * 24 * 3600  # limits.MAX_DURATION
_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def _show(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(value: str | int | float) -> float:
    """Seconds in a Go duration string; raises ValueError like Go's message."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise ValueError(f'missing unit in duration "{value}"')
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip()
    orig = text
    sign = 1
    if text and text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f'invalid duration "{orig}"')
    total = Decimal(0)
    pos = 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text[pos:]):
                raise ValueError(f'missing unit in duration "{orig}"')
            raise ValueError(f'invalid duration "{orig}"')
        number, unit = m.groups()
        if number in ("", "."):
            raise ValueError(f'invalid duration "{orig}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'unknown unit "{unit}" in duration "{orig}"')
        if len(number.split(".")[0]) > 24:  # more seconds than a year in any unit
            raise ValueError(f'duration "{_show(orig)}" is too long (at most 8760h)')
        total += Decimal(number + "0" if number.endswith(".") else number) * _DURATION_UNITS[unit]
        pos = m.end()
    if total > MAX_SECONDS:
        raise ValueError(f'duration "{_show(orig)}" is too long (at most 8760h)')
    return float(sign * total)


def parse_bytes(value: str | int) -> int:
    """Bytes in a RAMInBytes size ("100M", "1.5G", "512k", 1024); raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size: '{value}'")
        if value > MAX_BYTES:
            raise ValueError(f"size {value} is too large (at most {MAX_BYTES} bytes)")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"invalid size: '{value}'")
        value = repr(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid size: {value!r}")
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"invalid size: '{value}'")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise ValueError(f"invalid size: '{value}'") from None
    mult = _SIZE_MULT[(m.group(2) or "").lower()]
    size = number * mult
    if size > MAX_BYTES:
        raise ValueError(f"size '{_show(value)}' is too large (at most {MAX_BYTES} bytes)")
    return int(size)


def parse_nano_cpus(value: str | int | float) -> int:
    """Nano-CPUs in a CPU count ("0.50" -> 500000000); refuses values finer than 1e-9."""
    if isinstance(value, bool):
        raise ValueError(f"invalid CPU count: {value!r}")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        exact = Decimal(text)  # bounded before Fraction, which would expand 1e99999999 digit by digit
    except InvalidOperation:
        raise ValueError(f"invalid CPU count: '{value}'") from None
    if not exact.is_finite() or exact.adjusted() > 7 or exact > MAX_CPUS:
        raise ValueError(f"invalid CPU count: '{_show(text)}' (at most {MAX_CPUS})")
    if exact.adjusted() < -12:
        raise ValueError(f"value is too precise: '{value}'")
    try:
        cpus = Fraction(exact)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"invalid CPU count: '{value}'") from None
    if cpus < 0:
        raise ValueError(f"invalid CPU count: '{value}'")
    nano = cpus * 1_000_000_000
    if nano.denominator != 1:
        raise ValueError(f"value is too precise: '{value}'")
    return int(nano)
