"""YAML text of a merged stack for ``shoal stack config``, ordered like ``docker stack config``.

Values that came from variables are text until typed: where the compose schema wants a
number or a boolean (``replicas``, ``init``, ``max_failure_ratio``, port numbers…) the
output has one, as ``docker compose config`` prints it, so that the output loads back to
the same stack (the book's chapter 14 deploys `config`'s output).
"""
from __future__ import annotations

import io
import re
from typing import Any, Optional

from ruamel.yaml import YAML

from shoal.compose.tree import IStr, to_plain

_INT, _NUM, _BOOL = "int", "number", "bool"
# Where the schema types a value: key paths, "*" for any name or index.
_TYPED: list[tuple[tuple[str, ...], str]] = [
    (("services", "*", "deploy", "replicas"), _INT),
    (("services", "*", "deploy", "max_concurrent"), _INT),
    (("services", "*", "deploy", "resources", "*", "pids"), _INT),
    (("services", "*", "deploy", "restart_policy", "max_attempts"), _INT),
    (("services", "*", "deploy", "update_config", "parallelism"), _INT),
    (("services", "*", "deploy", "rollback_config", "parallelism"), _INT),
    (("services", "*", "deploy", "update_config", "max_failure_ratio"), _NUM),
    (("services", "*", "deploy", "rollback_config", "max_failure_ratio"), _NUM),
    (("services", "*", "deploy", "placement", "max_replicas_per_node"), _INT),
    (("services", "*", "healthcheck", "retries"), _INT),
    (("services", "*", "healthcheck", "disable"), _BOOL),
    (("services", "*", "ports", "*", "target"), _INT),
    (("services", "*", "ports", "*", "published"), _INT),
    (("services", "*", "configs", "*", "mode"), _INT),
    (("services", "*", "secrets", "*", "mode"), _INT),
    (("services", "*", "volumes", "*", "read_only"), _BOOL),
    (("services", "*", "volumes", "*", "volume", "nocopy"), _BOOL),
    (("services", "*", "ulimits", "*"), _INT),
    (("services", "*", "ulimits", "*", "soft"), _INT),
    (("services", "*", "ulimits", "*", "hard"), _INT),
] + [(("services", "*", key), _BOOL) for key in ("init", "read_only", "tty", "stdin_open", "privileged")] \
  + [((section, "*", "external"), _BOOL) for section in ("networks", "volumes", "configs", "secrets")] \
  + [(("networks", "*", key), _BOOL) for key in ("attachable", "internal")]
_TRUE, _FALSE = {"y", "yes", "true", "on"}, {"n", "no", "false", "off"}


def _kind(path: tuple[str, ...]) -> Optional[str]:
    for pattern, kind in _TYPED:
        if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path)):
            return kind
    return None


def _typed(value: str, kind: str) -> Any:
    text = value.strip()
    if kind == _BOOL and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if kind == _INT and re.fullmatch(r"[+-]?\d{1,19}", text):
        return int(text)
    if kind == _NUM and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?", text):
        number = float(text)
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return value  # not what the schema wants: printed as written, the loader says why


def apply_types(value: Any, path: tuple[str, ...] = ()) -> Any:
    """Values from variables (IStr) typed where the schema types them."""
    if isinstance(value, dict):
        for key in list(value):
            value[key] = apply_types(value[key], path + (str(key),))
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = apply_types(item, path + (str(i),))
        return value
    if isinstance(value, IStr):
        kind = _kind(path)
        return _typed(value, kind) if kind else value
    return value

_TOP_ORDER = ("version", "name", "services", "networks", "volumes", "configs", "secrets")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _escape(value: Any) -> Any:
    """Values are already interpolated: write '$' as '$$' so the output loads back unchanged."""
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, str):
        return value.replace("$", "$$")
    return value


def render_config(merged: dict, escape: bool = True) -> str:
    """Top-level keys in docker's order; services, objects and their keys sorted; '$' escaped
    (not when the variables were left as written: --skip-interpolation)."""
    plain = to_plain(apply_types(merged))
    if escape:
        plain = _escape(plain)
    ordered = {}
    for key in _TOP_ORDER:
        if key in plain and plain[key] is not None:
            ordered[key] = plain[key] if key in ("version", "name") else _sorted(plain[key])
    if "version" in ordered:
        ordered["version"] = str(ordered["version"])
    yaml = YAML(typ="rt")  # the round-trip dumper keeps insertion order
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(ordered, out)
    return out.getvalue()
