"""``.env`` and ``env_file`` files: KEY=VALUE lines, read with the same decoding as stack files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from shoal.compose.errors import ComposeError
from shoal.compose.reader import decode, display_name

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def parse_env_text(text: str, name: str) -> dict[str, Optional[str]]:
    """Variables in an env file; a bare ``KEY`` maps to None (take it from the environment)."""
    result: dict[str, Optional[str]] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not key or any(c.isspace() for c in key):
            raise ComposeError(f"invalid variable line {raw.strip()!r}", name, number)
        result[key] = _value(value.strip()) if sep else None
    return result


def _value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, body, i = [], value[1:-1], 0
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
                out.append(_ESCAPES[body[i + 1]])
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)
    comment = value.find(" #")
    return value[:comment].rstrip() if comment >= 0 else value


def read_env_file(path: str | Path) -> dict[str, Optional[str]]:
    name = display_name(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ComposeError(f"cannot read env file: {exc.strerror}", name) from None
    return parse_env_text(decode(data, name), name)
