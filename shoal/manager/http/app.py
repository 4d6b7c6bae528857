"""The manager's aiohttp application: route groups, authorisation, bodies, errors.

Every request passes one middleware: the caller is identified and checked against the
route's audience (`authz.py`), the body is read within the route's limit and validated
by its model (`bodies.py`), and any error becomes a JSON answer with a status — never a
traceback to the client (an unexpected error is logged with its route and answers 500).
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from shoal.manager.components import Components
from shoal.manager.errors import ApiError
from shoal.store import Conflict as StoreConflict, Deposed, StoreUnavailable

CONFLICT_RETRIES = 3  # a user's change made again after another manager's won the race
from shoal.manager.http.agent_routes import AgentRoutes
from shoal.manager.http.authz import Policy, identify
from shoal.manager.http.bodies import MiB, parse, read_json
from shoal.manager.http.cluster_routes import ClusterRoutes
from shoal.manager.http.dashboard_routes import DashboardRoutes
from shoal.manager.http.event_routes import EventRoutes
from shoal.manager.http.join_routes import JoinRoutes
from shoal.manager.http.object_routes import ObjectRoutes
from shoal.manager.http.openapi import document
from shoal.manager.http.reply import reply
from shoal.manager.http.route import BODY, CALLER, Route
from shoal.manager.http.service_routes import ServiceRoutes

log = logging.getLogger("shoal.api")

# aiohttp's own cap on any body: the largest route limit (a stack file with its configs).
MAX_BODY = 32 * MiB


class ManagerApp:
    def __init__(self, c: Components):
        self.c = c
        self.groups = [ClusterRoutes(c), ServiceRoutes(c), ObjectRoutes(c), AgentRoutes(c), JoinRoutes(c),
                       EventRoutes(c), DashboardRoutes(c)]
        self.routes: list[Route] = [r for g in self.groups for r in g.routes()]
        self.routes.append(Route("GET", "/openapi.json", self.openapi, "public"))
        self._by_key = {(r.method, r.path): r for r in self.routes}
        self.policy = Policy(member=c.membership.refusal, locked=lambda: not c.keyring.unlocked,
                             session_valid=c.dashboard.valid)

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=MAX_BODY)
        app.add_routes([web.route(r.method, r.path, r.handler) for r in self.routes])
        return app

    async def openapi(self, request: web.Request) -> web.Response:
        return reply(document(self.routes))

    async def _retrying(self, handler, request: web.Request) -> web.StreamResponse:
        """A user's change that lost a race with another manager's (a Conflict: its commit
        wrote nothing) is made again once this manager's view has the other's change: the
        handlers compute their writes from the view, so running one again is what the user
        would do after "try again". A deposed leader's refusal is not retried."""
        store = self.c.store
        for attempt in range(CONFLICT_RETRIES):
            rev = store.rev
            try:
                return await handler(request)
            except StoreConflict as e:
                if isinstance(e, Deposed) or attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("%s %s: %s; making it again on the new view", request.method, request.path, e)
                await store.wait_for_change(rev, 1.0)
        raise AssertionError("unreachable")

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = self._by_key.get((request.method, resource.canonical)) if resource is not None else None
        try:
            if route is None:
                return await handler(request)  # aiohttp's 404 / 405
            caller = identify(request)
            request[CALLER] = caller
            self.policy.check(caller, route.audience)
            if route.body is not None:
                request[BODY] = parse(route.body, await read_json(request, route.limit))
            if route.audience == "user" and request.method != "GET":
                return await self._retrying(handler, request)
            return await handler(request)
        except ApiError as e:
            return reply({"message": str(e)}, status=e.status)
        except StoreUnavailable as e:  # etcd cut off or without quorum: nothing was written
            log.warning("%s %s: the cluster store does not answer: %s", request.method, request.path, e)
            return reply({"message": f"the cluster store does not answer, nothing was changed: {e}"}, status=503)
        except StoreConflict as e:  # another manager changed it meanwhile, or this one was deposed
            return reply({"message": f"{e}; try again"}, status=409)
        except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:  # noqa: BLE001 - a bug: logged, never a traceback to the caller
            log.exception("internal error on %s %s", request.method, request.path)
            return reply({"message": "internal error (the manager's log has the details)"}, status=500)
