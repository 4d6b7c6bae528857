"""User routes for stacks, services and tasks."""
from __future__ import annotations

from aiohttp import web

from shoal.manager.cluster import resolve
from shoal.manager.components import Components
from shoal.manager.errors import ApiError, NotFound
from shoal.manager.http.bodies import MiB, RebalanceBody, ScaleBody, ServiceUpdateBody, StackDeployBody, query_str
from shoal.manager.http.reply import reply
from shoal.manager.http.route import BODY, Route
from shoal.manager.http.views import ServiceViews
from shoal.model.objects import Node, Service, Task


class ServiceRoutes:
    def __init__(self, c: Components):
        self.c = c
        self.views = ServiceViews(c.store)

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/stacks", self.stack_ls, "user"),
            # configs (1000 KB) and secrets (500 KB) travel inside a stack: room for several
            Route("POST", "/v1/stacks/{name}", self.stack_deploy, "user", StackDeployBody, 32 * MiB),
            Route("DELETE", "/v1/stacks/{name}", self.stack_rm, "user"),
            Route("GET", "/v1/services", self.service_ls, "user",
                  query=(("stack", "string", "only the services of this stack"),)),
            Route("GET", "/v1/services/{ref}", self.service_inspect, "user"),
            Route("POST", "/v1/services/{ref}/update", self.service_update, "user", ServiceUpdateBody, MiB),
            Route("POST", "/v1/services/{ref}/scale", self.service_scale, "user", ScaleBody),
            Route("POST", "/v1/services/{ref}/rollback", self.service_rollback, "user"),
            Route("POST", "/v1/services/{ref}/rebalance", self.service_rebalance, "user", RebalanceBody),
            Route("DELETE", "/v1/services/{ref}", self.service_rm, "user"),
            Route("GET", "/v1/services/{ref}/logs", self.service_logs, "user",
                  query=(("follow", "boolean", "keep streaming new lines"),
                         ("tail", "string", "lines from the end of each log (a number or all)"))),
            Route("GET", "/v1/tasks", self.task_ls, "user",
                  query=(("service", "string", "tasks of this service"), ("stack", "string", "tasks of this stack"),
                         ("node", "string", "tasks on this node"))),
        ]

    # -- stacks ------------------------------------------------------------------------
    async def stack_ls(self, request: web.Request) -> web.Response:
        return reply(self.c.cluster.stacks())

    async def stack_deploy(self, request: web.Request) -> web.Response:
        body: StackDeployBody = request[BODY]
        if body.stack.name != request.match_info["name"]:
            raise ApiError("stack name in the path and the body differ")
        return reply({"messages": self.c.cluster.deploy_stack(body.stack, prune=body.prune)})

    async def stack_rm(self, request: web.Request) -> web.Response:
        return reply({"messages": self.c.cluster.remove_stack(request.match_info["name"])})

    # -- services ----------------------------------------------------------------------
    async def service_ls(self, request: web.Request) -> web.Response:
        stack = query_str(request, "stack")
        svcs = [s for s in self.c.store.all(Service) if not stack or s.spec.stack == stack]
        if stack and not svcs:
            raise NotFound(f"Nothing found in stack: {stack}")
        return reply([self.views.view(s) for s in sorted(svcs, key=lambda s: s.spec.name)])

    async def service_inspect(self, request: web.Request) -> web.Response:
        return reply(self.views.view(resolve(self.c.store, Service, request.match_info["ref"], "service")))

    async def service_update(self, request: web.Request) -> web.Response:
        body: ServiceUpdateBody = request[BODY]
        svc = self.c.cluster.update_service(request.match_info["ref"], body.spec, body.version)
        return reply(self.views.view(svc))

    async def service_scale(self, request: web.Request) -> web.Response:
        body: ScaleBody = request[BODY]
        return reply(self.views.view(self.c.cluster.scale(request.match_info["ref"], body.replicas)))

    async def service_rollback(self, request: web.Request) -> web.Response:
        return reply(self.views.view(self.c.cluster.rollback(request.match_info["ref"])))

    async def service_rebalance(self, request: web.Request) -> web.Response:
        svc, moves = self.c.cluster.rebalance(request.match_info["ref"])
        return reply({**self.views.view(svc), "moves": moves})

    async def service_rm(self, request: web.Request) -> web.Response:
        return reply({"removed": self.c.cluster.remove_service(request.match_info["ref"])})

    async def service_logs(self, request: web.Request) -> web.StreamResponse:
        svc = resolve(self.c.store, Service, request.match_info["ref"], "service")
        return await self.c.log_hub.serve(request, svc)

    async def task_ls(self, request: web.Request) -> web.Response:
        st = self.c.store
        service, stack, node = (query_str(request, k) for k in ("service", "stack", "node"))
        tasks: list[Task]
        if service:
            tasks = st.tasks_of_service(resolve(st, Service, service, "service").id)
        elif stack:
            ids = {s.id for s in self.c.cluster.services_of_stack(stack)}
            if not ids:
                raise NotFound(f"Nothing found in stack: {stack}")
            tasks = [t for sid in ids for t in st.tasks_of_service(sid)]
        elif node:
            tasks = st.tasks_of_node(resolve(st, Node, node, "node").id)
        else:
            tasks = st.all(Task)
        return reply([t.model_dump(mode="json") for t in tasks])
