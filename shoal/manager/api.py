"""The manager's HTTP API: the only door into cluster state, for the CLI and the agents.

Who may call what is decided by how the caller came in: the local unix socket
(root only) and admin certificates get the user API; node certificates get only
the agent routes, for their own node. While the cluster is autolocked, only
`unlock` answers.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from shoal import pki
from shoal.core import task_states as ts
from shoal.manager.cluster import Cluster, resolve
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.errors import ApiError, ClusterLocked, Forbidden, NotFound
from shoal.manager.actions import ActionHub
from shoal.manager.keyring import BadUnlockKey, Keyring
from shoal.manager.volumes import VolumeRegistry
from shoal.model.objects import ConfigObj, NetworkObj, Node, SecretObj, Service, Task
from shoal.model.specs import NetworkSpec, ServiceSpec, StackSpec
from shoal.store import Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VERSION = "0.1.0"
# Assignment answers above this are streamed in pieces of this size, BIG_ANSWERS_AT_ONCE at a
# time (each write waits for the connection to drain): a thousand nodes being sent endpoint
# deltas at once would otherwise each hold a plain and an encrypted copy in memory.
BIG_ANSWER = 64 * 1024
BIG_ANSWERS_AT_ONCE = 8


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def caller(request: web.Request) -> tuple[str, str]:
    """(identity, role): ("local", "admin") on the unix socket, else from the TLS peer cert."""
    transport = request.transport
    if transport is None:
        raise Forbidden("no transport")
    ssl_obj = transport.get_extra_info("ssl_object")
    if ssl_obj is None:
        if transport.get_extra_info("peername") in (None, "", b"") or isinstance(
                transport.get_extra_info("sockname"), str):
            return "local", "admin"
        raise Forbidden("TLS client certificate required")
    ident = pki.peer_identity(ssl_obj.getpeercert())
    if ident is None:
        raise Forbidden("client certificate has no Shoal identity")
    return ident


class ManagerApi:
    def __init__(self, store: Store, cluster: Cluster, dispatcher: Dispatcher, keyring: Keyring,
                 info: dict, on_unlock: Callable[[], None]):
        self.store = store
        self.cluster = cluster
        self.dispatcher = dispatcher
        self.keyring = keyring
        self.info_data = info
        self.on_unlock = on_unlock
        self.log_hub = None  # set by the server: relays `service logs` to agents
        self.actions = ActionHub()  # manager -> agent actions (volume inspect/rm/prune)
        self.volumes = VolumeRegistry(store, known_nodes=lambda: [n.id for n in store.all(Node)])
        self._big_answers = asyncio.Semaphore(BIG_ANSWERS_AT_ONCE)
        self._views: dict[str, tuple[tuple[int, int], dict]] = {}  # service id -> (key, service_view)

    # ------------------------------------------------------------ middleware
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            ident, role = caller(request)
            request["ident"], request["role"] = ident, role
            path = request.path
            if not self.keyring.unlocked and path not in ("/v1/unlock", "/v1/info"):
                raise ClusterLocked("Swarm is encrypted and needs to be unlocked before it can be used. "
                                    "Please use \"shoal unlock\" to unlock it.")
            if path.startswith("/v1/agent/"):
                if not role.startswith("node-"):
                    raise Forbidden("agent routes need a node certificate")
            elif role != "admin" and path not in ("/v1/info", "/openapi.json"):
                raise Forbidden(f"{role} certificates may not use the user API")
            return await handler(request)
        except ApiError as e:
            return _json({"message": str(e)}, status=e.status)
        except web.HTTPException:
            raise
        except json.JSONDecodeError as e:
            return _json({"message": f"invalid JSON body: {e}"}, status=400)
        except Exception as e:  # pydantic ValidationError and friends
            if type(e).__name__ == "ValidationError":
                return _json({"message": f"invalid request: {e}"}, status=400)
            raise

    def routes(self) -> list[web.RouteDef]:
        r = web
        return [
            r.get("/openapi.json", self.openapi),
            r.get("/v1/info", self.info),
            r.post("/v1/unlock", self.unlock),
            r.post("/v1/unlock-key", self.unlock_key),
            r.get("/v1/stacks", self.stack_ls),
            r.post("/v1/stacks/{name}", self.stack_deploy),
            r.delete("/v1/stacks/{name}", self.stack_rm),
            r.get("/v1/services", self.service_ls),
            r.get("/v1/services/{ref}", self.service_inspect),
            r.post("/v1/services/{ref}/update", self.service_update),
            r.post("/v1/services/{ref}/scale", self.service_scale),
            r.post("/v1/services/{ref}/rollback", self.service_rollback),
            r.delete("/v1/services/{ref}", self.service_rm),
            r.get("/v1/services/{ref}/logs", self.service_logs),
            r.get("/v1/tasks", self.task_ls),
            r.get("/v1/nodes", self.node_ls),
            r.get("/v1/nodes/{ref}", self.node_inspect),
            r.post("/v1/nodes/{ref}/update", self.node_update),
            r.get("/v1/configs", self.config_ls),
            r.post("/v1/configs", self.config_create),
            r.get("/v1/configs/{ref}", self.config_inspect),
            r.post("/v1/configs/{ref}/update", self.config_update),
            r.delete("/v1/configs/{ref}", self.config_rm),
            r.get("/v1/secrets", self.secret_ls),
            r.post("/v1/secrets", self.secret_create),
            r.get("/v1/secrets/{ref}", self.secret_inspect),
            r.post("/v1/secrets/{ref}/update", self.secret_update),
            r.delete("/v1/secrets/{ref}", self.secret_rm),
            r.get("/v1/networks", self.network_ls),
            r.post("/v1/networks", self.network_create),
            r.get("/v1/networks/{ref}", self.network_inspect),
            r.delete("/v1/networks/{ref}", self.network_rm),
            r.get("/v1/volumes", self.volume_ls),
            r.post("/v1/volumes/prune", self.volume_prune),
            r.get("/v1/volumes/{name}", self.volume_inspect),
            r.delete("/v1/volumes/{name}", self.volume_rm),
            r.post("/v1/agent/heartbeat", self.agent_heartbeat),
            r.get("/v1/agent/assignments", self.agent_assignments),
            r.post("/v1/agent/status", self.agent_status),
            r.get("/v1/agent/logs", self.agent_log_requests),
            r.post("/v1/agent/logs/{req}", self.agent_log_data),
            r.get("/v1/agent/actions", self.agent_action_requests),
            r.post("/v1/agent/actions/{req}", self.agent_action_answer),
        ]

    # ------------------------------------------------------------------ misc
    async def openapi(self, request: web.Request) -> web.Response:
        from shoal.manager.openapi import document
        return _json(document(self.routes()))

    async def info(self, request: web.Request) -> web.Response:
        return _json({**self.info_data, "version": VERSION, "locked": not self.keyring.unlocked,
                      "autolock": self.keyring.autolocked, "nodes": self.store.count(Node),
                      "services": self.store.count(Service), "tasks": self.store.count(Task)})

    async def unlock(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.keyring.unlocked:
            raise ApiError("swarm is not locked", 409)
        try:
            self.keyring.unlock(body.get("key", ""))
        except BadUnlockKey:
            raise ApiError("invalid key", 403) from None
        self.on_unlock()
        return _json({"unlocked": True})

    async def unlock_key(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("autolock") is not None:
            key = self.keyring.set_autolock(bool(body["autolock"]))
        elif body.get("rotate"):
            if not self.keyring.autolocked:
                raise ApiError("autolock is not enabled: use `shoal init --autolock` or `shoal update --autolock`")
            key = self.keyring.set_autolock(True)
        else:
            raise ApiError("the unlock key itself is never stored; use --rotate to get a new one")
        return _json({"unlock_key": key})

    # ---------------------------------------------------------------- stacks
    async def stack_ls(self, request: web.Request) -> web.Response:
        return _json(self.cluster.stacks())

    async def stack_deploy(self, request: web.Request) -> web.Response:
        body = await request.json()
        stack = StackSpec.model_validate(body["stack"])
        if stack.name != request.match_info["name"]:
            raise ApiError("stack name in the path and the body differ")
        msgs = self.cluster.deploy_stack(stack, prune=bool(body.get("prune")))
        return _json({"messages": msgs})

    async def stack_rm(self, request: web.Request) -> web.Response:
        return _json({"messages": self.cluster.remove_stack(request.match_info["name"])})

    # -------------------------------------------------------------- services
    def service_view(self, svc: Service) -> dict:
        key = (svc.version, self.store.service_seq(svc.id))
        hit = self._views.get(svc.id)
        if hit is not None and hit[0] == key:
            return hit[1]
        view = self._service_view(svc)
        if len(self._views) > 10_000:
            self._views.clear()
        self._views[svc.id] = (key, view)
        return view

    def _service_view(self, svc: Service) -> dict:
        """The service with its replica counts (cached until it or one of its tasks changes)."""
        tasks = self.store.tasks_of_service(svc.id)
        running = 0
        has_health = bool(svc.spec.container.healthcheck and not svc.spec.container.healthcheck.disable
                          and svc.spec.container.healthcheck.test != ["NONE"])
        completed = 0
        for t in tasks:
            if t.desired_state == ts.RUNNING and t.status.state == ts.RUNNING:
                if t.status.health in (None, "healthy") or (not has_health and t.status.health == "starting"):
                    running += 1
            if t.status.state == ts.COMPLETE:
                completed += 1
        if svc.spec.mode == "global":
            desired = len({t.node_id for t in tasks if t.desired_state == ts.RUNNING})
        elif svc.spec.mode == "replicated":
            desired = svc.spec.replicas
        else:
            desired = svc.spec.replicas
        d = svc.model_dump(mode="json")
        d["replicas_running"] = running
        d["replicas_desired"] = desired
        d["completed"] = completed
        return d

    async def service_ls(self, request: web.Request) -> web.Response:
        stack = request.query.get("stack")
        svcs = [s for s in self.store.all(Service) if not stack or s.spec.stack == stack]
        if stack and not svcs:
            raise NotFound(f"Nothing found in stack: {stack}")
        return _json([self.service_view(s) for s in sorted(svcs, key=lambda s: s.spec.name)])

    async def service_inspect(self, request: web.Request) -> web.Response:
        return _json(self.service_view(resolve(self.store, Service, request.match_info["ref"], "service")))

    async def service_update(self, request: web.Request) -> web.Response:
        body = await request.json()
        spec = ServiceSpec.model_validate(body["spec"])
        svc = self.cluster.update_service(request.match_info["ref"], spec, body.get("version"))
        return _json(self.service_view(svc))

    async def service_scale(self, request: web.Request) -> web.Response:
        body = await request.json()
        return _json(self.service_view(self.cluster.scale(request.match_info["ref"], int(body["replicas"]))))

    async def service_rollback(self, request: web.Request) -> web.Response:
        return _json(self.service_view(self.cluster.rollback(request.match_info["ref"])))

    async def service_rm(self, request: web.Request) -> web.Response:
        return _json({"removed": self.cluster.remove_service(request.match_info["ref"])})

    async def service_logs(self, request: web.Request) -> web.StreamResponse:
        svc = resolve(self.store, Service, request.match_info["ref"], "service")
        if self.log_hub is None:
            raise ApiError("logs are not available", 501)
        return await self.log_hub.serve(request, svc)

    async def task_ls(self, request: web.Request) -> web.Response:
        q = request.query
        tasks: list[Task]
        if q.get("service"):
            svc = resolve(self.store, Service, q["service"], "service")
            tasks = self.store.tasks_of_service(svc.id)
        elif q.get("stack"):
            ids = {s.id for s in self.cluster.services_of_stack(q["stack"])}
            if not ids:
                raise NotFound(f"Nothing found in stack: {q['stack']}")
            tasks = [t for sid in ids for t in self.store.tasks_of_service(sid)]
        elif q.get("node"):
            node = resolve(self.store, Node, q["node"], "node")
            tasks = self.store.tasks_of_node(node.id)
        else:
            tasks = self.store.all(Task)
        return _json([t.model_dump(mode="json") for t in tasks])

    # ----------------------------------------------------------------- nodes
    def node_view(self, n: Node) -> dict:
        d = n.model_dump(mode="json")
        d["self"] = n.id == self.cluster.node_id
        return d

    async def node_ls(self, request: web.Request) -> web.Response:
        return _json([self.node_view(n) for n in sorted(self.store.all(Node), key=lambda n: n.description.hostname)])

    async def node_inspect(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        if ref == "self":
            ref = self.cluster.node_id
        return _json(self.node_view(resolve(self.store, Node, ref, "node")))

    async def node_update(self, request: web.Request) -> web.Response:
        body = await request.json()
        ref = request.match_info["ref"]
        node = self.cluster.update_node(self.cluster.node_id if ref == "self" else ref, body.get("label_add", {}),
                                        body.get("label_rm", []), body.get("availability"))
        return _json(self.node_view(node))

    # ------------------------------------------------------- configs/secrets
    @staticmethod
    def config_view(c: ConfigObj) -> dict:
        """The current version's data; `versions` lists every version still kept (oldest first)."""
        d = c.model_dump(mode="json", exclude={"older_versions"})
        d["data"] = base64.b64encode(c.data).decode()
        d["versions"] = c.versions
        return d

    @staticmethod
    def secret_view(s: SecretObj) -> dict:
        return {"id": s.id, "version": s.version, "created_at": s.created_at, "updated_at": s.updated_at,
                "name": s.name, "labels": s.labels, "driver": s.driver, "data_version": s.data_version,
                "versions": s.versions}

    async def _body_data(self, request: web.Request) -> tuple[str, bytes, dict]:
        body = await request.json()
        try:
            data = base64.b64decode(body.get("data", ""), validate=True)
        except Exception:
            raise ApiError("data must be base64") from None
        return body.get("name", ""), data, body.get("labels", {})

    async def config_ls(self, request: web.Request) -> web.Response:
        return _json([self.config_view(c) for c in sorted(self.store.all(ConfigObj), key=lambda c: c.name)])

    async def config_create(self, request: web.Request) -> web.Response:
        name, data, labels = await self._body_data(request)
        if not name:
            raise ApiError("a config needs a name")
        return _json(self.config_view(self.cluster.create_config(name, data, labels)), 201)

    async def config_inspect(self, request: web.Request) -> web.Response:
        return _json(self.config_view(resolve(self.store, ConfigObj, request.match_info["ref"], "config")))

    async def config_update(self, request: web.Request) -> web.Response:
        _, data, _ = await self._body_data(request)
        obj, msgs = self.cluster.update_config_data(request.match_info["ref"], data)
        return _json({**self.config_view(obj), "messages": msgs})

    async def config_rm(self, request: web.Request) -> web.Response:
        return _json({"removed": self.cluster.remove_config(request.match_info["ref"])})

    async def secret_ls(self, request: web.Request) -> web.Response:
        return _json([self.secret_view(s) for s in sorted(self.store.all(SecretObj), key=lambda s: s.name)])

    async def secret_create(self, request: web.Request) -> web.Response:
        name, data, labels = await self._body_data(request)
        if not name:
            raise ApiError("a secret needs a name")
        return _json(self.secret_view(self.cluster.create_secret(name, data, labels)), 201)

    async def secret_inspect(self, request: web.Request) -> web.Response:
        return _json(self.secret_view(resolve(self.store, SecretObj, request.match_info["ref"], "secret")))

    async def secret_update(self, request: web.Request) -> web.Response:
        _, data, _ = await self._body_data(request)
        obj, msgs = self.cluster.update_secret_data(request.match_info["ref"], data)
        return _json({**self.secret_view(obj), "messages": msgs})

    async def secret_rm(self, request: web.Request) -> web.Response:
        return _json({"removed": self.cluster.remove_secret(request.match_info["ref"])})

    # -------------------------------------------------------------- networks
    async def network_ls(self, request: web.Request) -> web.Response:
        return _json([n.model_dump(mode="json") for n in sorted(self.store.all(NetworkObj),
                                                                 key=lambda n: n.spec.name)])

    async def network_create(self, request: web.Request) -> web.Response:
        spec = NetworkSpec.model_validate(await request.json())
        return _json(self.cluster.create_network(spec).model_dump(mode="json"), 201)

    async def network_inspect(self, request: web.Request) -> web.Response:
        return _json(resolve(self.store, NetworkObj, request.match_info["ref"], "network").model_dump(mode="json"))

    async def network_rm(self, request: web.Request) -> web.Response:
        return _json({"removed": self.cluster.remove_network(request.match_info["ref"])})

    # --------------------------------------------------------------- volumes
    # Volumes live on nodes: the registry knows where (heartbeats); the node's agent acts.
    def _volume_services(self, name: str) -> list[str]:
        return sorted(s.spec.name for s in self.store.all(Service)
                      if any(m.type == "volume" and m.source == name for m in s.spec.container.mounts))

    def _hostname(self, node_id: str) -> str:
        n = self.store.get(Node, node_id)
        return n.description.hostname if n is not None else node_id

    def _volume_targets(self, name: str, node_ref: str | None) -> list[Node]:
        """The ready nodes to ask about volume `name`: the given node, those known to hold it,
        or (not reported yet: heartbeats are 5 s apart) every ready node."""
        if node_ref:
            nodes = [resolve(self.store, Node, node_ref, "node")]
        else:
            ids = self.volumes.nodes_of(name) if name else []
            nodes = [n for n in (self.store.get(Node, i) for i in ids) if n is not None] or \
                [n for n in self.store.all(Node) if n.state == "ready"]
        down = [n for n in nodes if n.state != "ready"]
        if down and len(down) == len(nodes):
            raise ApiError(f"node {down[0].description.hostname} ({down[0].id[:12]}) is {down[0].state}: "
                           f"volume {name or ''} cannot be reached".replace("  ", " "), 503)
        return [n for n in nodes if n.state == "ready"]

    async def _on_nodes(self, nodes: list[Node], kind: str, args: dict) -> list[tuple[Node, object]]:
        results = await asyncio.gather(*(self.actions.call(n.id, kind, args, node_name=n.description.hostname)
                                         for n in nodes), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, ApiError):
                raise r
        return list(zip(nodes, results))

    async def volume_ls(self, request: web.Request) -> web.Response:
        out = []
        for node_id, vols in self.volumes.by_node().items():
            for v in vols:
                out.append({**v, "node_id": node_id, "node": self._hostname(node_id)})
        return _json(sorted(out, key=lambda v: (v["name"], v["node"])))

    async def volume_inspect(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found, errors = [], []
        for node, r in await self._on_nodes(self._volume_targets(name, request.query.get("node")),
                                            "volume.inspect", {"name": name}):
            if isinstance(r, ApiError):
                if r.status != 404:
                    errors.append(str(r))
                continue
            found.append({**r, "NodeHostname": node.description.hostname,
                          "Services": self._volume_services(name)})
        if not found:
            raise ApiError("; ".join(errors), 502) if errors else NotFound(f"no such volume: {name}")
        return _json(found)

    async def volume_rm(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        users = self._volume_services(name)
        if users:
            raise ApiError(f"volume {name} is in use by service(s) {', '.join(users)}: "
                           "remove the service(s) or their stack first", 409)
        removed, errors, missing = [], [], 0
        for node, r in await self._on_nodes(self._volume_targets(name, request.query.get("node")),
                                            "volume.rm", {"name": name}):
            if isinstance(r, ApiError):
                if r.status == 404:
                    missing += 1
                else:
                    errors.append((r.status, str(r)))
                continue
            self.volumes.forget(node.id, [name])
            removed.append(node.description.hostname)
        if errors:
            raise ApiError("; ".join(m for _, m in errors), max(s for s, _ in errors))
        if not removed:
            raise NotFound(f"no such volume: {name}")
        return _json({"removed": name, "nodes": removed})

    async def volume_prune(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        labels = body.get("labels") or {}
        keep = sorted({m.source for s in self.store.all(Service) for m in s.spec.container.mounts
                       if m.type == "volume" and m.source})
        nodes = [n for n in self.store.all(Node) if n.state == "ready"]
        removed, kept, errors = [], [], []
        for node, r in await self._on_nodes(nodes, "volume.prune", {"keep": keep, "labels": labels}):
            if isinstance(r, ApiError):
                errors.append(str(r))
                continue
            self.volumes.forget(node.id, r["removed"])
            removed += [{"name": v, "node": node.description.hostname} for v in r["removed"]]
            kept += r["kept"]
        return _json({"removed": removed, "kept": sorted(set(kept)), "errors": errors})

    # ----------------------------------------------------------------- agent
    def _node_of(self, request: web.Request) -> str:
        return request["ident"]

    async def agent_heartbeat(self, request: web.Request) -> web.Response:
        body = await request.json()
        node_id = self._node_of(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        addr = body.get("addr") or (peer[0] if isinstance(peer, tuple) else "")
        resp = self.dispatcher.heartbeat(node_id, request["role"][5:], body.get("description", {}), addr)
        if "ports_in_use" in body:
            self.cluster.ports_in_use[node_id] = dict(body["ports_in_use"])
        if "engine_subnets" in body:
            subnets = list(body["engine_subnets"])
            if self.cluster.foreign_subnets.get(node_id) != subnets:
                self.cluster.foreign_subnets[node_id] = subnets
                self.cluster.fix_subnet_conflicts()
        if "volumes" in body:
            self.volumes.report(node_id, list(body["volumes"] or []))
        return _json(resp)

    async def agent_assignments(self, request: web.Request) -> web.Response:
        """Long poll: answer as soon as the node's own part changed, or (held back a little,
        see Dispatcher.news) when endpoints it has not seen exist; else after `wait` seconds."""
        node_id = self._node_of(request)
        since = int(request.query.get("rev", "-1"))
        wait = min(float(request.query.get("wait", "30")), 60.0)
        deadline = time.monotonic() + wait
        known = request.query.get("digest")
        ep = request.query.get("ep", "")
        d = self.dispatcher
        ev = d.waiter(node_id)
        while True:
            ev.clear()
            view = d.view(node_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or since < 0:
                break
            hold = d.news(node_id, view, known, ep)
            if hold == 0:
                break
            if hold > 0:  # news, held back: the answer goes out then, whatever comes meanwhile
                await asyncio.sleep(min(hold, remaining))
                continue
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        parts = d.answer_parts(node_id, view, ep, known)
        size = sum(len(p) for p in parts)
        if size < BIG_ANSWER:
            return web.Response(body=b"".join(parts), content_type="application/json")
        # Big answers (a full endpoint table, at scale) are streamed from the shared pieces,
        # a few at a time, so memory does not grow with nodes x answer size.
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = size
        async with self._big_answers:
            await resp.prepare(request)
            for piece in _coalesce(parts, BIG_ANSWER):
                await resp.write(piece)
            await resp.write_eof()
        return resp

    async def agent_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        return _json({"applied": await self.dispatcher.report_batched(self._node_of(request), body.get("updates", []))})

    async def agent_log_requests(self, request: web.Request) -> web.Response:
        if self.log_hub is None:
            return _json([])
        return _json(await self.log_hub.requests_for(self._node_of(request), float(request.query.get("wait", "30"))))

    async def agent_action_requests(self, request: web.Request) -> web.Response:
        wait = min(float(request.query.get("wait", "30")), 60.0)
        return _json(await self.actions.requests_for(self._node_of(request), wait))

    async def agent_action_answer(self, request: web.Request) -> web.Response:
        taken = self.actions.answer(request.match_info["req"], await request.json())
        return _json({"taken": taken})

    async def agent_log_data(self, request: web.Request) -> web.Response:
        if self.log_hub is None:
            raise NotFound("no such log request")
        await self.log_hub.receive(request.match_info["req"], request)
        return _json({})


def _coalesce(parts: list[bytes], size: int):
    """The parts as writes of about `size` bytes: small pieces joined, big ones cut."""
    buf = bytearray()
    for p in parts:
        if len(p) >= size:
            if buf:
                yield bytes(buf)
                buf.clear()
            view = memoryview(p)
            for i in range(0, len(view), size):
                yield view[i:i + size]
            continue
        buf += p
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)
