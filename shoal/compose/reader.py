"""Read one stack file: decode any Unicode encoding, parse YAML, keep line numbers.

Files come from Windows as often as not (UTF-16 with BOM, CRLF), so decoding is done
here rather than trusting the platform default. The YAML is parsed with ruamel's
round-trip loader only to get line numbers; the result is plain located data.

Several documents in one file (`---`) are merged in order, as Docker Compose does. The
merge tags `!reset` (drop the key) and `!override` (replace, do not merge) are kept for
the merge; any other application tag is refused, as are YAML values that do not fit
their tag (`!!int web`). Whatever the input, the result is a ComposeError naming the
file and line, never a Python error: nesting is limited to MAX_DEPTH levels and the data
(aliases expanded) to MAX_VALUES values, so a 433-byte alias bomb is refused at once.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Optional

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarint import ScalarInt

from shoal.compose.errors import ComposeError
from shoal.compose.tree import LDict, LList, Loc

MAX_DEPTH = 64
MAX_VALUES = 200_000
MERGE_TAGS = {"!reset": "reset", "!override": "override"}

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


def _first_tag_line(text: str) -> Optional[int]:
    for i, line in enumerate(text.splitlines(), 1):
        if "!!" in line:
            return i
    return None


class _Budget:
    """How many values the conversion may still make (aliases count every time they are used)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.left = MAX_VALUES

    def spend(self, loc: Loc) -> None:
        self.left -= 1
        if self.left < 0:
            raise ComposeError(f"too many values (more than {MAX_VALUES:,} once YAML aliases are expanded)",
                               self.name, loc[1])


def parse_documents(text: str, name: str) -> list[LDict]:
    """Located data of each YAML document of a file; each must be a mapping."""
    yaml = YAML(typ="rt")
    try:
        docs = [d for d in yaml.load_all(text)]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise ComposeError(f"YAML syntax error: {problem}", name, line) from None
    except YAMLError as exc:
        raise ComposeError(f"YAML syntax error: {exc}", name) from None
    except RecursionError:
        raise ComposeError(f"YAML nested too deeply (at most {MAX_DEPTH} levels)", name) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a value its tag refuses: !!int web
        raise ComposeError(f"YAML value does not fit its tag: {exc}", name, _first_tag_line(text)) from None
    docs = [d for d in docs if d is not None]
    if not docs:
        raise ComposeError("empty compose file", name)
    budget = _Budget(name)
    out = []
    for doc in docs:
        if not isinstance(doc, CommentedMap):
            raise ComposeError("top-level object must be a mapping", name, 1)
        try:
            out.append(_convert(doc, (name, 1), name, 0, budget))
        except RecursionError:
            raise ComposeError(f"YAML nested too deeply (at most {MAX_DEPTH} levels)", name) from None
    return out


def parse_yaml(text: str, name: str) -> LDict:
    """Located data of a file: its documents merged in order (see merge.merge_documents)."""
    from shoal.compose.merge import merge_documents
    docs = parse_documents(text, name)
    return docs[0] if len(docs) == 1 else merge_documents(docs)


STDIN = "-"


def read_file(path: str | Path) -> LDict:
    """Decode and parse one stack file (``-``: standard input); errors name it as
    ``display_name`` does."""
    if str(path) == STDIN:
        import sys
        return parse_yaml(decode(sys.stdin.buffer.read(), "<stdin>"), "<stdin>")
    name = display_name(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ComposeError(f"cannot read file: {exc.strerror}", name) from None
    except ValueError as exc:  # a NUL in the path
        raise ComposeError(f"invalid file path: {exc}", name) from None
    return parse_yaml(decode(data, name), name)


def _line(lc_data: Optional[dict], key: Any, fallback: Loc, name: str) -> Loc:
    pos = lc_data.get(key) if lc_data else None
    return (name, pos[0] + 1) if pos else fallback


def _tag(obj: Any) -> str:
    tag = getattr(obj, "tag", None)
    value = getattr(tag, "value", None) if tag is not None else None
    return value or ""


def _convert(obj: Any, loc: Loc, name: str, depth: int, budget: _Budget) -> Any:
    budget.spend(loc)
    if depth > MAX_DEPTH:
        raise ComposeError(f"nested too deeply (at most {MAX_DEPTH} levels)", name, loc[1])
    tag = _tag(obj)
    if tag and tag not in MERGE_TAGS and not tag.startswith("tag:yaml.org,2002:"):
        raise ComposeError(f"unsupported YAML tag {tag}", name, loc[1])
    if isinstance(obj, CommentedMap):
        out = LDict(loc)
        for key, value in obj.items():  # includes keys brought in by '<<' merges
            kloc = _line(obj.lc.data, key, loc, name)
            out.put(_key(key), _convert(value, kloc, name, depth + 1, budget), kloc)
            vtag = _tag(value)
            if vtag in MERGE_TAGS:
                out.tags[_key(key)] = MERGE_TAGS[vtag]
        return out
    if isinstance(obj, CommentedSeq):
        seq = LList(loc)
        for i, value in enumerate(obj):
            iloc = _line(obj.lc.data, i, loc, name)
            seq.add(_convert(value, iloc, name, depth + 1, budget), iloc)
        return seq
    if isinstance(obj, TaggedScalar):
        return _scalar(obj.value)
    if obj is not None and not isinstance(obj, (bool, int, float, str, datetime.date)):
        # !!set, !!omap, !!binary…: not compose data
        raise ComposeError(f"unsupported YAML value ({type(obj).__name__})", name, loc[1])
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
    return str(obj)


def _go_int(obj: int) -> int:
    """Ints as Docker's YAML (1.1) reads them: a leading 0 means octal, so ``mode: 0440`` is 288."""
    width = getattr(obj, "_width", None)
    if type(obj) is ScalarInt and width and obj >= 0:
        digits = str(int(obj)).zfill(width)
        if len(digits) > 1 and digits.startswith("0") and set(digits) <= set("01234567"):
            return int(digits, 8)
    return int(obj)
