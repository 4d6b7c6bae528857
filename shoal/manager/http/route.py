"""One route of the manager's API: its handler, who may call it, and what body it takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

from aiohttp import web
from pydantic import BaseModel

from shoal.manager.http.authz import Audience

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Where the middleware leaves the caller and the validated body for the handler.
_key = getattr(web, "RequestKey", None)
CALLER = _key("caller", object) if _key else "caller"
BODY = _key("body", object) if _key else "body"

DEFAULT_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    audience: Audience
    body: Optional[type[BaseModel]] = None  # validated before the handler runs: request[BODY]
    limit: int = DEFAULT_LIMIT  # largest body accepted (bytes)
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description) for the OpenAPI document
