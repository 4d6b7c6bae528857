"""How a model's validation errors are told: field by field, never with the values."""
from __future__ import annotations

from pydantic import ValidationError


def describe_errors(e: ValidationError) -> str:
    """A validation error as `field: message; …`, without the values (a secret must never be
    echoed back to a client or into a log)."""
    parts = []
    for err in e.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(body)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts[:8]) + (f" (and {len(parts) - 8} more)" if len(parts) > 8 else "")
