"""Located data: plain dicts and lists that remember where each entry was written.

The loader reads, interpolates, reshapes and merges files before it converts them to
specs; errors found late must still name the file and line. So every mapping and list
carries the location of each of its entries, and merging copies locations along with
values. ``Node`` wraps a value with its key path and location, and does the type checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, NoReturn, Optional

from shoal.compose.errors import ComposeError

Loc = tuple[str, int]  # (file as shown in messages, 1-based line)


class IStr(str):
    """A string produced by interpolation: like compose, it may still be read as a number/bool."""


class LDict(dict):
    """A dict whose entries remember their (file, line)."""

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.locs: dict[str, Loc] = {}
        self.tags: dict[str, str] = {}  # key -> "reset" | "override" (compose merge tags)

    def put(self, key: str, value: Any, loc: Optional[Loc] = None) -> None:
        self[key] = value
        self.locs[key] = loc or self.loc

    def drop(self, key: str) -> None:
        self.pop(key, None)
        self.locs.pop(key, None)
        self.tags.pop(key, None)

    def loc_of(self, key: str) -> Loc:
        return self.locs.get(key, self.loc)


class LList(list):
    """A list whose items remember their (file, line)."""

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.locs: list[Loc] = []

    def add(self, value: Any, loc: Optional[Loc] = None) -> None:
        self.append(value)
        self.locs.append(loc or self.loc)

    def loc_of(self, index: int) -> Loc:
        return self.locs[index] if index < len(self.locs) else self.loc


def to_plain(value: Any) -> Any:
    """Strip locations (and IStr) for callers that want ordinary data."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def go_number(value: Any) -> str:
    """A YAML number as compose turns it into text: 1.0 -> "1", 1000.0 -> "1000", 1.5 -> "1.5"."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return str(value)


def describe(value: Any) -> str:
    """How a wrong value is shown in messages: strings quoted, others by kind."""
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


_TRUE = {"y", "yes", "true", "on"}
_FALSE = {"n", "no", "false", "off"}


@dataclass(frozen=True)
class Node:
    """A value with its key path and location; typed accessors raise ComposeError."""

    value: Any
    path: str
    loc: Loc

    # -- navigation -------------------------------------------------------
    def error(self, message: str) -> ComposeError:
        return ComposeError(message, self.loc[0], self.loc[1], self.path)

    def fail(self, message: str) -> NoReturn:
        raise self.error(message)

    def get(self, key: str) -> Optional["Node"]:
        """The child at ``key`` of a mapping, or None when absent or null."""
        mapping = self.mapping()
        if key not in mapping or mapping[key] is None:
            return None
        return self.child(key)

    def child(self, key: str) -> "Node":
        mapping = self.value
        return Node(mapping[key], join(self.path, key), mapping.loc_of(key))

    def items(self) -> Iterator[tuple[str, "Node"]]:
        for key in self.mapping():
            yield key, self.child(key)

    def elements(self) -> list["Node"]:
        seq = self.list()
        return [Node(v, join(self.path, i), seq.loc_of(i)) for i, v in enumerate(seq)]

    def check_keys(self, allowed: set[str] | frozenset[str], what: str = "option") -> None:
        for key, node in self.items():
            if key not in allowed and not key.startswith("x-"):
                node.fail(f"unknown {what} {key!r}")

    # -- shapes -------------------------------------------------------------
    def expect(self, kind: str) -> NoReturn:
        self.fail(f"expected {kind}, got {describe(self.value)}")

    def mapping(self) -> LDict:
        if not isinstance(self.value, dict):
            self.expect("a mapping")
        return self.value

    def list(self) -> LList:
        if not isinstance(self.value, list):
            self.expect("a list")
        return self.value

    def str(self) -> str:
        if isinstance(self.value, str):
            return str(self.value)
        if isinstance(self.value, (int, float)) and not isinstance(self.value, bool):
            return go_number(self.value)  # YAML turned it into a number; compose reads it back as text
        self.expect("a string")

    def strict_str(self) -> str:
        if not isinstance(self.value, str):
            self.expect("a string")
        return str(self.value)

    def int(self, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
        value = self.value
        if isinstance(value, IStr):
            try:
                value = int(value.strip()) if len(value.strip()) <= 30 else value
            except ValueError:
                pass
        if not isinstance(value, int) or isinstance(value, bool):
            self.expect("an integer")
        if minimum is not None and value < minimum:
            self.fail(f"must be at least {minimum}, got {value}")
        top = maximum if maximum is not None else 2**63 - 1
        if value > top:
            shown = str(value) if len(str(value)) <= 30 else f"a {len(str(value))}-digit number"
            self.fail(f"must be at most {top}, got {shown}")
        return value

    def number(self) -> float:
        value = self.value
        if isinstance(value, IStr):
            try:
                value = float(value.strip())
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self.expect("a number")
        try:
            number = float(value)
        except OverflowError:
            number = float("inf")
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"must be a finite number, got {describe(value)}")
        return number

    def bool(self) -> bool:
        value = self.value
        if isinstance(value, IStr) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            self.expect("a boolean")
        return value

    def str_list(self) -> list[str]:
        """A string or a list of strings, as a list."""
        if isinstance(self.value, str):
            return [str(self.value)]
        return [n.str() for n in self.elements()]

    def convert(self, parse: Callable[[Any], Any], what: str) -> Any:
        """Apply a units parser, turning its ValueError into a located error."""
        try:
            return parse(self.value)
        except (ValueError, TypeError) as exc:
            self.fail(str(exc) or f"invalid {what} {describe(self.value)}")
