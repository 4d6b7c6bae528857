"""Read one stack file: decode any Unicode encoding, parse YAML, keep line numbers.

Files come from Windows as often as not (UTF-16 with BOM, CRLF), so decoding is done
here rather than trusting the platform default. The YAML is parsed with ruamel's
round-trip loader only to get line numbers; the result is plain located data.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarint import ScalarInt

from shoal.compose.errors import ComposeError
from shoal.compose.tree import LDict, LList, Loc

_BOMS = [
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
]


def display_name(path: str | Path) -> str:
    """How a file is named in messages: relative to the working directory when under it, else its basename."""
    path = Path(path)
    try:
        rel = Path(os.path.abspath(path)).relative_to(Path.cwd())
        return rel.as_posix()
    except (ValueError, OSError):
        return path.name


def decode(data: bytes, name: str) -> str:
    """Text of a file in UTF-8/16/32 (BOM or not), with line endings made '\\n'."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            encoding = codec
            if codec != "utf-8-sig":  # utf-8-sig drops its BOM itself
                data = data[len(bom):]
            break
    else:
        # No BOM: UTF-16 without BOM shows up as NUL bytes in every other position.
        if len(data) >= 2 and data[0] == 0 and data[1] != 0:
            encoding = "utf-16-be"
        elif len(data) >= 2 and data[1] == 0 and data[0] != 0:
            encoding = "utf-16-le"
        else:
            encoding = "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ComposeError(f"cannot decode file as {encoding}: {exc.reason}", name) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_yaml(text: str, name: str) -> LDict:
    """Located data of one YAML document, which must be a mapping."""
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise ComposeError(f"YAML syntax error: {problem}", name, line) from None
    except YAMLError as exc:
        raise ComposeError(f"YAML syntax error: {exc}", name) from None
    if doc is None:
        raise ComposeError("empty compose file", name)
    if not isinstance(doc, CommentedMap):
        raise ComposeError("top-level object must be a mapping", name, 1)
    return _convert(doc, (name, 1), name)


def read_file(path: str | Path) -> LDict:
    """Decode and parse one stack file; errors name it as ``display_name`` does."""
    name = display_name(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ComposeError(f"cannot read file: {exc.strerror}", name) from None
    return parse_yaml(decode(data, name), name)


def _line(lc_data: dict, key: Any, fallback: Loc, name: str) -> Loc:
    pos = lc_data.get(key)
    return (name, pos[0] + 1) if pos else fallback


def _convert(obj: Any, loc: Loc, name: str) -> Any:
    if isinstance(obj, CommentedMap):
        out = LDict(loc)
        for key, value in obj.items():  # includes keys brought in by '<<' merges
            kloc = _line(obj.lc.data, key, loc, name)
            out.put(_key(key), _convert(value, kloc, name), kloc)
        return out
    if isinstance(obj, CommentedSeq):
        seq = LList(loc)
        for i, value in enumerate(obj):
            iloc = _line(obj.lc.data, i, loc, name)
            seq.add(_convert(value, iloc, name), iloc)
        return seq
    return _scalar(obj)


def _key(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _scalar(obj: Any) -> Any:
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return _go_int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (datetime.date, datetime.datetime)):
        return obj.isoformat()
    value = getattr(obj, "value", obj)  # tagged scalars
    return str(value)


def _go_int(obj: int) -> int:
    """Ints as Docker's YAML (1.1) reads them: a leading 0 means octal, so ``mode: 0440`` is 288."""
    width = getattr(obj, "_width", None)
    if type(obj) is ScalarInt and width and obj >= 0:
        digits = str(int(obj)).zfill(width)
        if len(digits) > 1 and digits.startswith("0") and set(digits) <= set("01234567"):
            return int(digits, 8)
    return int(obj)
