"""User routes for configs, secrets, networks and volumes."""
from __future__ import annotations

import asyncio

from aiohttp import web

from shoal.manager.cluster import resolve
from shoal.manager.components import Components
from shoal.manager.errors import ApiError, NotFound
from shoal.manager.http.bodies import MiB, FileObjectBody, NetworkCreateBody, VolumePruneBody, query_str
from shoal.manager.http.reply import reply
from shoal.manager.http.route import BODY, Route
from shoal.manager.http.views import config_view, secret_view
from shoal.model.objects import ConfigObj, NetworkObj, Node, SecretObj, Service


class ObjectRoutes:
    def __init__(self, c: Components):
        self.c = c

    def routes(self) -> list[Route]:
        node_q = (("node", "string", "the node to ask (default: where the volume is)"),)
        return [
            Route("GET", "/v1/configs", self.config_ls, "user"),
            Route("POST", "/v1/configs", self.config_create, "user", FileObjectBody, 2 * MiB),
            Route("GET", "/v1/configs/{ref}", self.config_inspect, "user"),
            Route("POST", "/v1/configs/{ref}/update", self.config_update, "user", FileObjectBody, 2 * MiB),
            Route("DELETE", "/v1/configs/{ref}", self.config_rm, "user"),
            Route("GET", "/v1/secrets", self.secret_ls, "user"),
            Route("POST", "/v1/secrets", self.secret_create, "user", FileObjectBody, MiB),
            Route("GET", "/v1/secrets/{ref}", self.secret_inspect, "user"),
            Route("POST", "/v1/secrets/{ref}/update", self.secret_update, "user", FileObjectBody, MiB),
            Route("DELETE", "/v1/secrets/{ref}", self.secret_rm, "user"),
            Route("GET", "/v1/networks", self.network_ls, "user"),
            Route("POST", "/v1/networks", self.network_create, "user", NetworkCreateBody),
            Route("GET", "/v1/networks/{ref}", self.network_inspect, "user"),
            Route("DELETE", "/v1/networks/{ref}", self.network_rm, "user"),
            Route("GET", "/v1/volumes", self.volume_ls, "user"),
            Route("POST", "/v1/volumes/prune", self.volume_prune, "user", VolumePruneBody),
            Route("GET", "/v1/volumes/{name}", self.volume_inspect, "user", query=node_q),
            Route("DELETE", "/v1/volumes/{name}", self.volume_rm, "user", query=node_q),
        ]

    # -- configs and secrets -----------------------------------------------------------
    async def config_ls(self, request: web.Request) -> web.Response:
        return reply([config_view(c) for c in sorted(self.c.store.all(ConfigObj), key=lambda c: c.name)])

    async def config_create(self, request: web.Request) -> web.Response:
        body: FileObjectBody = request[BODY]
        if not body.name:
            raise ApiError("a config needs a name")
        return reply(config_view(self.c.cluster.create_config(body.name, body.raw(), body.labels)), 201)

    async def config_inspect(self, request: web.Request) -> web.Response:
        return reply(config_view(resolve(self.c.store, ConfigObj, request.match_info["ref"], "config")))

    async def config_update(self, request: web.Request) -> web.Response:
        body: FileObjectBody = request[BODY]
        obj, msgs = self.c.cluster.update_config_data(request.match_info["ref"], body.raw())
        return reply({**config_view(obj), "messages": msgs})

    async def config_rm(self, request: web.Request) -> web.Response:
        return reply({"removed": self.c.cluster.remove_config(request.match_info["ref"])})

    async def secret_ls(self, request: web.Request) -> web.Response:
        return reply([secret_view(s) for s in sorted(self.c.store.all(SecretObj), key=lambda s: s.name)])

    async def secret_create(self, request: web.Request) -> web.Response:
        body: FileObjectBody = request[BODY]
        if not body.name:
            raise ApiError("a secret needs a name")
        return reply(secret_view(self.c.cluster.create_secret(body.name, body.raw(), body.labels)), 201)

    async def secret_inspect(self, request: web.Request) -> web.Response:
        return reply(secret_view(resolve(self.c.store, SecretObj, request.match_info["ref"], "secret")))

    async def secret_update(self, request: web.Request) -> web.Response:
        body: FileObjectBody = request[BODY]
        obj, msgs = self.c.cluster.update_secret_data(request.match_info["ref"], body.raw())
        return reply({**secret_view(obj), "messages": msgs})

    async def secret_rm(self, request: web.Request) -> web.Response:
        return reply({"removed": self.c.cluster.remove_secret(request.match_info["ref"])})

    # -- networks ----------------------------------------------------------------------
    async def network_ls(self, request: web.Request) -> web.Response:
        return reply([n.model_dump(mode="json") for n in sorted(self.c.store.all(NetworkObj), key=lambda n: n.spec.name)])

    async def network_create(self, request: web.Request) -> web.Response:
        return reply(self.c.cluster.create_network(request[BODY]).model_dump(mode="json"), 201)

    async def network_inspect(self, request: web.Request) -> web.Response:
        return reply(resolve(self.c.store, NetworkObj, request.match_info["ref"], "network").model_dump(mode="json"))

    async def network_rm(self, request: web.Request) -> web.Response:
        return reply({"removed": self.c.cluster.remove_network(request.match_info["ref"])})

    # -- volumes: they live on nodes; the registry knows where (heartbeats), the node's agent acts
    def _volume_services(self, name: str) -> list[str]:
        return sorted(s.spec.name for s in self.c.store.all(Service)
                      if any(m.type == "volume" and m.source == name for m in s.spec.container.mounts))

    def _hostname(self, node_id: str) -> str:
        n = self.c.store.get(Node, node_id)
        return n.description.hostname if n is not None else node_id

    def _volume_targets(self, name: str, node_ref: str | None) -> list[Node]:
        """The ready nodes to ask about volume `name`: the given node, those known to hold it,
        or (not reported yet) every ready node."""
        st = self.c.store
        if node_ref:
            nodes = [resolve(st, Node, node_ref, "node")]
        else:
            ids = self.c.volumes.nodes_of(name) if name else []
            nodes = [n for n in (st.get(Node, i) for i in ids) if n is not None] or \
                [n for n in st.all(Node) if n.state == "ready"]
        down = [n for n in nodes if n.state != "ready"]
        if down and len(down) == len(nodes):
            raise ApiError(f"node {down[0].description.hostname} ({down[0].id[:12]}) is {down[0].state}: "
                           f"volume {name} cannot be reached", 503)
        return [n for n in nodes if n.state == "ready"]

    async def _on_nodes(self, nodes: list[Node], kind: str, args: dict) -> list[tuple[Node, object]]:
        results = await asyncio.gather(*(self.c.actions.call(n.id, kind, args, node_name=n.description.hostname)
                                         for n in nodes), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, ApiError):
                raise r
        return list(zip(nodes, results))

    async def volume_ls(self, request: web.Request) -> web.Response:
        out = []
        for node_id, vols in self.c.volumes.by_node().items():
            for v in vols:
                out.append({**v, "node_id": node_id, "node": self._hostname(node_id)})
        return reply(sorted(out, key=lambda v: (v["name"], v["node"])))

    async def volume_inspect(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found, errors = [], []
        for node, r in await self._on_nodes(self._volume_targets(name, query_str(request, "node")),
                                            "volume.inspect", {"name": name}):
            if isinstance(r, ApiError):
                if r.status != 404:
                    errors.append(str(r))
                continue
            found.append({**r, "NodeHostname": node.description.hostname, "Services": self._volume_services(name)})
        if not found:
            raise ApiError("; ".join(errors), 502) if errors else NotFound(f"no such volume: {name}")
        return reply(found)

    async def volume_rm(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        users = self._volume_services(name)
        if users:
            raise ApiError(f"volume {name} is in use by service(s) {', '.join(users)}: "
                           "remove the service(s) or their stack first", 409)
        removed, errors = [], []
        for node, r in await self._on_nodes(self._volume_targets(name, query_str(request, "node")),
                                            "volume.rm", {"name": name}):
            if isinstance(r, ApiError):
                if r.status != 404:
                    errors.append((r.status, str(r)))
                continue
            self.c.volumes.forget(node.id, [name])
            removed.append(node.description.hostname)
        if errors:
            raise ApiError("; ".join(m for _, m in errors), max(s for s, _ in errors))
        if not removed:
            raise NotFound(f"no such volume: {name}")
        return reply({"removed": name, "nodes": removed})

    async def volume_prune(self, request: web.Request) -> web.Response:
        body: VolumePruneBody = request[BODY]
        keep = sorted({m.source for s in self.c.store.all(Service) for m in s.spec.container.mounts
                       if m.type == "volume" and m.source})
        nodes = [n for n in self.c.store.all(Node) if n.state == "ready"]
        removed, kept, errors = [], [], []
        for node, r in await self._on_nodes(nodes, "volume.prune", {"keep": keep, "labels": body.labels}):
            if isinstance(r, ApiError):
                errors.append(str(r))
                continue
            self.c.volumes.forget(node.id, r["removed"])
            removed += [{"name": v, "node": node.description.hostname} for v in r["removed"]]
            kept += r["kept"]
        return reply({"removed": removed, "kept": sorted(set(kept)), "errors": errors})
