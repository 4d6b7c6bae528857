"""YAML text of a merged stack for ``shoal stack config``, ordered like ``docker stack config``."""
from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML

from shoal.compose.tree import to_plain

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


def render_config(merged: dict) -> str:
    """Top-level keys in docker's order; services, objects and their keys sorted; '$' escaped."""
    plain = _escape(to_plain(merged))
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
