"""The user route for `shoal events`: the events kept, then the new ones as they happen."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Optional

from aiohttp import web

from shoal.core.events import FILTER_KEYS
from shoal.manager.components import Components
from shoal.manager.errors import ApiError
from shoal.manager.http.bodies import query_str
from shoal.manager.http.route import Route

POLL = 1.0  # seconds between checks that the client is still there and `until` not past


def _time(request: web.Request, name: str) -> Optional[float]:
    v = query_str(request, name, 32)
    if v in (None, ""):
        return None
    try:
        return float(v)
    except ValueError:
        raise ApiError(f"query parameter {name} must be a Unix time in seconds, not {v!r}") from None


def _filters(request: web.Request) -> dict[str, list[str]]:
    raw = query_str(request, "filters", 4096)
    if not raw:
        return {}
    try:
        f = json.loads(raw)
    except ValueError:
        raise ApiError("query parameter filters must be JSON: {\"type\": [\"service\"], ...}") from None
    if not isinstance(f, dict) or not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                          for v in f.values()):
        raise ApiError("query parameter filters must map each key to a list of strings")
    bad = sorted(set(f) - set(FILTER_KEYS))
    if bad:
        raise ApiError(f"invalid filter {bad[0]!r} (the filters are: {', '.join(FILTER_KEYS)})")
    return f


class EventRoutes:
    def __init__(self, c: Components):
        self.c = c

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/events", self.events, "user",
                  query=(("since", "number", "also the kept events from this Unix time"),
                         ("until", "number", "stop at this Unix time (past events only when it is past)"),
                         ("filters", "string", 'JSON {"type": ["service", "task"], "name": ["web"], ...}'))),
        ]

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Newline-delimited JSON, one event a line: the kept events from `since` (or, with
        only `until`, from the oldest kept), then new ones until `until` or the client leaves."""
        since, until, filters = _time(request, "since"), _time(request, "until"), _filters(request)
        if since is not None and until is not None and until < since:
            raise ApiError("until is before since")
        log = self.c.events
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        seq = log.seq
        try:
            if since is not None or until is not None:
                await self._write(resp, log.since(0, since, until, filters))
            while until is None or time.time() <= until:
                await log.wait(seq, POLL if until is None else max(0.01, min(POLL, until - time.time())))
                if log.seq > seq:
                    new = log.since(seq, since, until, filters)
                    seq = log.seq
                    await self._write(resp, new)
                if request.transport is None or request.transport.is_closing():
                    break
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    @staticmethod
    async def _write(resp: web.StreamResponse, evs: list[dict]) -> None:
        if evs:
            await resp.write("".join(json.dumps(ev, separators=(",", ":")) + "\n" for ev in evs).encode())
