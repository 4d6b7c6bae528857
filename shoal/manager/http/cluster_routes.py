"""User routes for the cluster itself: info, unlock, settings, join tokens, nodes."""
from __future__ import annotations

import asyncio
from typing import Optional

from aiohttp import web

from shoal.manager.cluster import resolve
from shoal.manager.components import Components
from shoal.manager.errors import ApiError
from shoal.manager.http.bodies import (ClusterUpdateBody, JoinTokenBody, NodeRemoveBody, NodeUpdateBody, UnlockBody,
                                       UnlockKeyBody)
from shoal.manager.http.reply import reply
from shoal.manager.http.route import BODY, Route
from shoal.manager.http.views import node_view
from shoal.manager.keyring import BadUnlockKey
from shoal.manager.lock_sync import publish
from shoal.model.objects import ClusterObj, Node, NodeFacts, Service, Task
from shoal.store import StoreUnavailable

VERSION = "0.2.0"


class ClusterRoutes:
    def __init__(self, c: Components):
        self.c = c

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/info", self.info, "public"),
            Route("POST", "/v1/unlock", self.unlock, "local", UnlockBody),
            Route("POST", "/v1/unlock-key", self.unlock_key, "user", UnlockKeyBody),
            Route("GET", "/v1/cluster", self.cluster_inspect, "user"),
            Route("POST", "/v1/cluster/update", self.cluster_update, "user", ClusterUpdateBody),
            Route("POST", "/v1/join-tokens/{role}", self.join_token, "user", JoinTokenBody),
            Route("GET", "/v1/nodes", self.node_ls, "user"),
            Route("GET", "/v1/nodes/{ref}", self.node_inspect, "user"),
            Route("POST", "/v1/nodes/{ref}/update", self.node_update, "user", NodeUpdateBody),
            Route("POST", "/v1/nodes/{ref}/remove", self.node_rm, "user", NodeRemoveBody),
            Route("POST", "/v1/nodes/{ref}/promote", self.node_promote, "user"),
            Route("POST", "/v1/nodes/{ref}/demote", self.node_demote, "user"),
        ]

    async def info(self, request: web.Request) -> web.Response:
        st, k = self.c.store, self.c.keyring
        s = st.get(ClusterObj, "cluster")
        extra: dict = {}
        members = self.c.membership.etcd_members
        if members is not None:  # the managers' own etcd members
            try:
                extra["etcd_members"] = await asyncio.to_thread(members.listing)
            except StoreUnavailable as e:
                extra["etcd_members_error"] = str(e)
        return reply({**extra, **{key: v for key, v in self.c.info.items() if key != "unlock_key"},
                      "role": "manager", "version": VERSION, "locked": not k.unlocked, "autolock": k.autolocked,
                      "nodes": st.count(Node), "services": st.count(Service), "tasks": st.count(Task),
                      "managers": self.c.heartbeats.managers(),
                      "heartbeat_period": s.heartbeat_period if s else None,
                      "cert_expiry": s.cert_expiry if s else None,
                      "data_path_port": s.data_path_port if s else None,
                      "store": self.c.info.get("store", "sqlite"),
                      "quarantined": len(st.quarantined()), **self.c.log_hub.stats()})

    async def unlock(self, request: web.Request) -> web.Response:
        body: UnlockBody = request[BODY]
        if self.c.keyring.unlocked:
            raise ApiError("the cluster is not locked", 409)
        try:
            self.c.keyring.unlock(body.key)
        except BadUnlockKey:
            raise ApiError("invalid key", 403) from None
        self.c.on_unlock()
        return reply({"unlocked": True})

    async def unlock_key(self, request: web.Request) -> web.Response:
        body: UnlockKeyBody = request[BODY]
        k = self.c.keyring
        if body.autolock is not None:
            key = self._set_autolock(body.autolock)
        elif body.rotate:
            if not k.autolocked:
                raise ApiError("autolock is not enabled: use `shoal init --autolock` or `shoal update --autolock true`")
            key = self._set_autolock(True)
        else:
            raise ApiError("the unlock key itself is never stored; use --rotate to get a new one")
        return reply({"unlock_key": key})

    def _set_autolock(self, autolock: bool) -> Optional[str]:
        """Autolock on (a new unlock key), or off, for every manager (lock_sync.py)."""
        k = self.c.keyring
        before = k.file_blob()
        key = k.set_autolock(autolock)
        try:
            publish(k, self.c.store)
        except StoreUnavailable:
            k.restore(before)  # not here either: the old key still unlocks every manager
            raise
        return key

    async def cluster_inspect(self, request: web.Request) -> web.Response:
        s = self.c.membership.settings()
        return reply({"id": self.c.info["cluster_id"], "heartbeat_period": s.heartbeat_period,
                      "cert_expiry": s.cert_expiry, "autolock": self.c.keyring.autolocked,
                      "data_path_port": s.data_path_port,
                      "removed_nodes": sorted(s.removed_nodes)})

    async def cluster_update(self, request: web.Request) -> web.Response:
        body: ClusterUpdateBody = request[BODY]
        out: dict = {}
        if body.dispatcher_heartbeat is not None or body.cert_expiry is not None:
            try:
                s = self.c.membership.update_settings(body.dispatcher_heartbeat, body.cert_expiry)
            except ValueError as e:  # the store's check of ClusterObj's bounds
                raise ApiError(str(e)) from None
            out.update(heartbeat_period=s.heartbeat_period, cert_expiry=s.cert_expiry)
        if body.autolock is not None:
            out["unlock_key"] = self._set_autolock(body.autolock)
        return reply(out)

    async def join_token(self, request: web.Request) -> web.Response:
        body: JoinTokenBody = request[BODY]
        role = request.match_info["role"]
        token = self.c.membership.token(role, rotate=body.rotate)
        if role == "manager" and not self.c.membership.managers_can_join:
            from shoal.manager.membership import MANAGER_NEEDS_ETCD
            return reply({"token": token, "managers": self.c.heartbeats.managers(), "usable": False,
                          "message": MANAGER_NEEDS_ETCD})
        return reply({"token": token, "managers": self.c.heartbeats.managers(), "usable": True})

    # -- nodes -------------------------------------------------------------------------
    def _view(self, n: Node) -> dict:
        return node_view(n, self.c.node_id, self.c.store.get(NodeFacts, n.id))

    async def node_ls(self, request: web.Request) -> web.Response:
        return reply([self._view(n) for n in sorted(self.c.store.all(Node), key=lambda n: n.description.hostname)])

    def _node(self, ref: str) -> Node:
        return resolve(self.c.store, Node, self.c.node_id if ref == "self" else ref, "node")

    async def node_inspect(self, request: web.Request) -> web.Response:
        return reply(self._view(self._node(request.match_info["ref"])))

    async def node_update(self, request: web.Request) -> web.Response:
        body: NodeUpdateBody = request[BODY]
        node = self._node(request.match_info["ref"])
        return reply(self._view(self.c.cluster.update_node(node.id, body.label_add, body.label_rm, body.availability)))

    async def node_promote(self, request: web.Request) -> web.Response:
        node = self._node(request.match_info["ref"])
        return reply({"id": node.id, "hostname": node.description.hostname,
                      "changed": self.c.membership.promote(node)})

    async def node_demote(self, request: web.Request) -> web.Response:
        node = self._node(request.match_info["ref"])
        m = self.c.membership
        changed = m.check_demote(node)
        if changed and m.etcd_members is not None and node.id != self.c.node_id:
            # its member leaves etcd first: stopped while still a member, it would count
            # against the quorum (waiting while etcd refuses a change right after another)
            from shoal.manager.etcd_member import CHANGE_PATIENCE
            try:
                await asyncio.to_thread(m.etcd_members.remove, node.id, CHANGE_PATIENCE)
            except StoreUnavailable as e:
                raise ApiError(f"removing the manager's etcd member failed, nothing was changed: {e}", 503) from None
            node = self._node(node.id)
        if changed:
            m.demote(node)
        return reply({"id": node.id, "hostname": node.description.hostname, "changed": changed})

    async def node_rm(self, request: web.Request) -> web.Response:
        body: NodeRemoveBody = request[BODY]
        node = self._node(request.match_info["ref"])
        self.c.membership.remove(node, body.force, self.c.node_id)
        self.c.heartbeats.forget(node.id)
        return reply({"removed": node.id, "hostname": node.description.hostname})
