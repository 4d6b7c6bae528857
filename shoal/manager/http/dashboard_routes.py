"""The dashboard's routes: its login link, its page, and what the page reads and may change.

Served on the manager's TLS port beside the API. `POST /v1/dashboard/login-link` (the local
user, through `shoal dashboard`) makes a one-time link; following it sets a session cookie;
the page then reads `/dashboard/api/*` with it, follows the cluster's events as server-sent
events, and may scale or roll back a service (with its own request header: see authz).
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import quote

from aiohttp import web

from shoal.manager.cluster import resolve
from shoal.manager.components import Components
from shoal.manager.dashboard.sessions import SESSION_TTL
from shoal.manager.dashboard.snapshot import snapshot
from shoal.manager.errors import NotFound
from shoal.manager.http.authz import SESSION_COOKIE
from shoal.manager.http.bodies import ScaleBody
from shoal.manager.http.reply import reply
from shoal.manager.http.route import BODY, Route
from shoal.manager.http.views import ServiceViews
from shoal.model.objects import Service

STATIC = os.path.join(os.path.dirname(os.path.dirname(__file__)), "dashboard", "static")
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
KEEPALIVE = 15.0  # seconds between comments on a quiet event stream (proxies close idle ones)
SECURITY_HEADERS = {
    # The page loads nothing from elsewhere and is never framed.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


def _static(name: str) -> bytes:
    with open(os.path.join(STATIC, name), "rb") as f:
        return f.read()


class DashboardRoutes:
    def __init__(self, c: Components):
        self.c = c
        self.views = ServiceViews(c.store)

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/dashboard/login-link", self.login_link, "user"),
            Route("GET", "/dashboard/login", self.login, "public",
                  query=(("token", "string", "the one-time token of a link `shoal dashboard` printed"),)),
            Route("GET", "/dashboard", self.to_page, "public"),
            Route("GET", "/dashboard/", self.page, "public"),
            Route("GET", "/dashboard/static/{name}", self.asset, "public"),
            Route("GET", "/dashboard/api/state", self.state, "browser"),
            Route("GET", "/dashboard/api/events", self.events, "browser"),
            Route("GET", "/dashboard/api/services/{ref}/logs", self.logs, "browser",
                  query=(("follow", "boolean", "keep streaming new lines"),
                         ("tail", "string", "lines from the end of each log"))),
            Route("POST", "/dashboard/api/services/{ref}/scale", self.scale, "browser-write", ScaleBody),
            Route("POST", "/dashboard/api/services/{ref}/rollback", self.rollback, "browser-write"),
        ]

    # -- logging in --------------------------------------------------------------------
    async def login_link(self, request: web.Request) -> web.Response:
        token = self.c.dashboard.new_token()
        addr = self.c.info.get("advertise_addr") or "127.0.0.1"
        host = f"[{addr}]" if ":" in addr else addr
        path = f"/dashboard/login?token={quote(token)}"
        return reply({"url": f"https://{host}:{self.c.info.get('port', 4343)}{path}", "path": path,
                      "expires_in": 300})

    async def login(self, request: web.Request) -> web.Response:
        session = self.c.dashboard.redeem(request.query.get("token", "")[:128])
        if session is None:
            return web.Response(status=403, content_type="text/html", headers=SECURITY_HEADERS, text=(
                "<!doctype html><title>Shoal</title><p>This login link is spent or has expired. "
                "Run <code>shoal dashboard</code> on a manager for a new one."))
        resp = web.Response(status=303, headers={**SECURITY_HEADERS, "Location": "/dashboard/"})
        resp.set_cookie(SESSION_COOKIE, session, path="/dashboard", secure=True, httponly=True, samesite="Strict",
                        max_age=int(SESSION_TTL))
        return resp

    # -- the page ------------------------------------------------------------------------
    async def to_page(self, request: web.Request) -> web.Response:
        return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": "/dashboard/"})

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html", headers=SECURITY_HEADERS)

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise NotFound(f"no such file: {name}")
        return web.Response(body=_static(name), headers={**SECURITY_HEADERS, "Content-Type": ASSETS[name]})

    # -- what the page reads -------------------------------------------------------------
    async def state(self, request: web.Request) -> web.Response:
        return reply({"time": time.time(), **snapshot(self.c.store, self.views, self.c.node_id)})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each cluster event as it happens (the page re-reads the state)."""
        log = self.c.events
        resp = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        seq = log.seq
        try:
            await resp.write(b"retry: 2000\n\n")
            while request.transport is not None and not request.transport.is_closing():
                await log.wait(seq, KEEPALIVE)
                new = log.since(seq, None, None, {})
                seq = log.seq
                if new:
                    await resp.write("".join(f"data: {json.dumps(ev, separators=(',', ':'))}\n\n"
                                             for ev in new).encode())
                else:
                    await resp.write(b": keepalive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def logs(self, request: web.Request) -> web.StreamResponse:
        svc = resolve(self.c.store, Service, request.match_info["ref"], "service")
        return await self.c.log_hub.serve(request, svc)

    # -- what the page may change --------------------------------------------------------
    async def scale(self, request: web.Request) -> web.Response:
        body: ScaleBody = request[BODY]
        svc = self.c.cluster.scale(request.match_info["ref"], body.replicas)
        return reply({"name": svc.spec.name, "replicas": svc.spec.replicas})

    async def rollback(self, request: web.Request) -> web.Response:
        svc = self.c.cluster.rollback(request.match_info["ref"])
        return reply({"name": svc.spec.name, "update": svc.update_status.state if svc.update_status else ""})
