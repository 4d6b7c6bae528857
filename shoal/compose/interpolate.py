"""Variable substitution in stack files, as compose does it (values only, never keys).

Forms: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``,
``${VAR?err}``, ``${VAR:+alt}``, ``${VAR+alt}`` and ``$$`` for a literal ``$``. Defaults
may themselves contain substitutions. An unset variable without default becomes "" and
a warning, as in docker.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from shoal.compose.errors import ComposeError
from shoal.compose.tree import IStr, LDict, LList, Loc, join

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """Raised by ``substitute``; the walker adds file, line and key path."""


def substitute(text: str, env: Mapping[str, str], warn: Callable[[str], None] = lambda _m: None) -> str:
    """``text`` with variables replaced; an IStr when a variable was used."""
    out, _end, used = _expand(text, 0, env, warn, nested=False)
    return IStr(out) if used else out


def _expand(text: str, pos: int, env: Mapping[str, str], warn: Callable[[str], None],
            nested: bool) -> tuple[str, int, bool]:
    """Expand from ``pos``; when ``nested``, stop at the '}' closing a default value."""
    out: list[str] = []
    used = False
    while pos < len(text):
        ch = text[pos]
        if nested and ch == "}":
            return "".join(out), pos, used
        if ch != "$":
            out.append(ch)
            pos += 1
            continue
        nxt = text[pos + 1] if pos + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            pos += 2
        elif nxt == "{":
            value, pos = _braced(text, pos + 2, env, warn)
            out.append(value)
            used = True
        else:
            m = _NAME.match(text, pos + 1)
            if not m:
                raise InterpolationError("invalid interpolation format")
            out.append(_lookup(m.group(), env, warn))
            used = True
            pos = m.end()
    if nested:
        raise InterpolationError("invalid interpolation format: missing '}'")
    return "".join(out), pos, used


def _braced(text: str, pos: int, env: Mapping[str, str], warn: Callable[[str], None]) -> tuple[str, int]:
    """Expand ``${...}`` whose body starts at ``pos``; returns (value, index after '}')."""
    m = _NAME.match(text, pos)
    if not m:
        raise InterpolationError("invalid interpolation format")
    name = m.group()
    pos = m.end()
    if text[pos:pos + 1] == "}":
        return _lookup(name, env, warn), pos + 1
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if text.startswith(op, pos):
            break
    else:
        raise InterpolationError("invalid interpolation format")
    arg, end, _ = _expand(text, pos + len(op), env, warn, nested=True)
    value = env.get(name)
    empty_counts = op.startswith(":")
    missing = value is None or (empty_counts and value == "")
    kind = op[-1]
    if kind == "-":
        result = arg if missing else value
    elif kind == "+":
        result = "" if missing else arg
    else:
        if missing:
            raise InterpolationError(f"required variable {name} is missing a value" + (f": {arg}" if arg else ""))
        result = value
    return result, end + 1


def _lookup(name: str, env: Mapping[str, str], warn: Callable[[str], None]) -> str:
    value = env.get(name)
    if value is None:
        warn(f'The "{name}" variable is not set. Defaulting to a blank string.')
        return ""
    return value


def interpolate_tree(tree: LDict, env: Mapping[str, str], warnings: list[str]) -> None:
    """Substitute in place in every string value of a located tree (keys untouched)."""

    def warn(message: str) -> None:
        if message not in warnings:
            warnings.append(message)

    def walk(value: Any, path: str, loc: Loc) -> Any:
        if isinstance(value, LDict):
            for key in list(value):
                value[key] = walk(value[key], join(path, key), value.loc_of(key))
            return value
        if isinstance(value, LList):
            for i, item in enumerate(value):
                value[i] = walk(item, join(path, i), value.loc_of(i))
            return value
        if isinstance(value, str) and "$" in value:
            try:
                return substitute(value, env, warn)
            except InterpolationError as exc:
                message = str(exc)
                if message.startswith("invalid"):
                    message = f'{message} in "{value}"; you may need to escape any $ with another $'
                raise ComposeError(message, loc[0], loc[1], path) from None
        return value

    walk(tree, "", tree.loc)
