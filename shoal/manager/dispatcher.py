"""The dispatcher: what each node agent is told to run, and what it may report back.

An agent sees only its own node's tasks, and only the configs and secrets those
tasks mount (secrets decrypted here and sent over mutual TLS). It may move its own
tasks forward along the agent's column of the state table, nothing else.
"""
from __future__ import annotations

import base64
import time
from typing import Any

from shoal.core import task_states as ts
from shoal.manager.cluster import Cluster
from shoal.manager.errors import ApiError, Forbidden
from shoal.model.objects import ConfigObj, NetworkObj, Node, NodeDescription, Service, Task, TaskStatus
from shoal.store.sqlite import Store

HEARTBEAT_PERIOD = 5.0


class Dispatcher:
    def __init__(self, store: Store, cluster: Cluster):
        self.store = store
        self.cluster = cluster
        self._endpoints_cache: tuple[int, list[dict]] | None = None

    def heartbeat(self, node_id: str, role: str, description: dict, addr: str) -> dict:
        node = self.store.get(Node, node_id)
        desc = NodeDescription.model_validate(description)
        now = time.time()
        if node is None:
            node = Node(id=node_id, role="manager" if role == "manager" else "worker",
                        description=desc, state="ready", addr=addr, last_heartbeat=now,
                        leader=role == "manager")
            self.store.put(node)
        elif node.state != "ready" or node.description != desc or node.addr != addr:
            self.store.put(node.model_copy(update={"description": desc, "state": "ready", "addr": addr,
                                                   "last_heartbeat": now}))
        else:
            # Heartbeats are frequent: keep them in memory only; a restart re-learns them.
            node.last_heartbeat = now
        return {"heartbeat_period": HEARTBEAT_PERIOD}

    def assignments(self, node_id: str) -> dict[str, Any]:
        st = self.store
        tasks = [t for t in st.tasks_of_node(node_id)
                 if not ts.is_terminal(t.status.state) or t.desired_state in (ts.RUNNING, ts.READY)]
        tasks = [t for t in tasks if t.status.state not in ts.TERMINAL]
        config_names, secret_names, net_names = set(), set(), set()
        for t in tasks:
            c = t.spec.container
            config_names |= {r.source for r in c.configs}
            secret_names |= {r.source for r in c.secrets}
            net_names |= {a.network for a in t.spec.networks}
        configs = {}
        for name in config_names:
            obj = st.by_name(ConfigObj, name)
            if obj is not None:
                configs[name] = base64.b64encode(obj.data).decode()
        secrets = {}
        for name in secret_names:
            data = self.cluster.secret_bytes(name)
            if data is not None:
                secrets[name] = base64.b64encode(data).decode()
        networks = [n.model_dump(mode="json") for n in st.all(NetworkObj) if n.spec.name in net_names]
        # A node needs the services it can reach: those on its tasks' networks, and every
        # service with an ingress port (the routing mesh answers on every node).
        endpoints = [e for e in self.endpoints() if e["ingress"] or net_names.intersection(e["networks"])]
        return {
            "rev": st.rev,
            "tasks": [t.model_dump(mode="json") for t in tasks],
            "configs": configs,
            "secrets": secrets,
            "networks": networks,
            "endpoints": endpoints,
        }

    def endpoints(self) -> list[dict]:
        """Every service's VIPs, ports and running replicas (computed once per store revision)."""
        if self._endpoints_cache is not None and self._endpoints_cache[0] == self.store.rev:
            return self._endpoints_cache[1]
        out = self._compute_endpoints()
        self._endpoints_cache = (self.store.rev, out)
        return out

    def _compute_endpoints(self) -> list[dict]:
        out = []
        for svc in self.store.all(Service):
            backends = []
            for t in self.store.tasks_of_service(svc.id):
                if t.status.state != ts.RUNNING or t.desired_state != ts.RUNNING:
                    continue
                if t.status.health not in (None, "healthy"):
                    continue
                backends.append({"task_id": t.id, "node_id": t.node_id, "addresses": t.status.addresses})
            out.append({
                "service_id": svc.id,
                "name": svc.spec.name,
                "short_name": svc.spec.short_name,
                "stack": svc.spec.stack,
                "endpoint_mode": svc.spec.endpoint_mode,
                "networks": [a.network for a in svc.spec.networks],
                "aliases": {a.network: a.aliases for a in svc.spec.networks},
                "virtual_ips": svc.virtual_ips,
                "ports": [{**p.model_dump(), "published": p.published or svc.published_ports.get(
                    f"{p.target}/{p.protocol}")} for p in svc.spec.ports],
                "backends": backends,
                "ingress": any(p.mode == "ingress" for p in svc.spec.ports),
            })
        return out

    def report(self, node_id: str, updates: list[dict]) -> int:
        st = self.store
        applied = 0
        with st.txn():
            for u in updates:
                t = st.get(Task, u.get("task_id", ""))
                if t is None:
                    continue
                if t.node_id != node_id:
                    raise Forbidden(f"task {t.id} is not assigned to node {node_id}")
                new_state = u.get("state", t.status.state)
                if ts.RANK.get(new_state, -1) < ts.RANK[t.status.state]:
                    continue  # states only move forward; a late report is dropped
                if not ts.can_move(ts.AGENT, t.status.state, new_state):
                    raise ApiError(f"task {t.id}: agent may not move it from {t.status.state} to {new_state}")
                status = TaskStatus(
                    state=new_state,
                    timestamp=u.get("timestamp") or time.time() if new_state != t.status.state else t.status.timestamp,
                    message=u.get("message", t.status.message),
                    err=u.get("err", t.status.err),
                    container_id=u.get("container_id") or t.status.container_id,
                    exit_code=u.get("exit_code", t.status.exit_code),
                    health=u.get("health", t.status.health),
                    addresses=u.get("addresses") or t.status.addresses,
                )
                if status != t.status:
                    st.put(t.model_copy(update={"status": status}))
                    applied += 1
        return applied
