"""The dispatcher: what each node agent is told to run, and what it may report back.

An agent sees only its own node's tasks, and only the configs and secrets those
tasks mount (secrets decrypted here and sent over mutual TLS). It may move its own
tasks forward along the agent's column of the state table, nothing else.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from shoal.core import task_states as ts
from shoal.manager.cluster import Cluster
from shoal.manager.errors import ApiError, Forbidden
from shoal.model.objects import ConfigObj, NetworkObj, Node, NodeDescription, SecretObj, Service, Task, TaskStatus
from shoal.store.sqlite import Store

HEARTBEAT_PERIOD = 5.0
ENDPOINTS_PER_SECOND = 10_000.0  # see Dispatcher.endpoint_hold
ENDPOINTS_MAX_HOLD = 10.0


@dataclass
class View:
    """What one node should be told now (see Dispatcher.view), before serialisation."""
    rev: int
    tasks: list[Task]
    configs: dict[str, ConfigObj]
    secrets: dict[str, SecretObj]
    networks: list[NetworkObj]
    own_key: str  # digest of the node's own part: tasks, configs, secrets, networks
    endpoints_key: str
    endpoints_json: bytes
    backends: int
    digest: str
    # Tasks of the node that ended on their own (complete/failed) and are still in their slot's
    # history: the agent keeps their stopped containers, for `service logs`, as Swarm does.
    history: list[str] = field(default_factory=list)


class Dispatcher:
    def __init__(self, store: Store, cluster: Cluster):
        self.store = store
        self.cluster = cluster
        self._ep_entries: dict[str, tuple[tuple[int, int], dict, str, int]] = {}
        self._ep_rev = -1
        self._ep_views: dict[frozenset[str], tuple[str, bytes, int]] = {}
        self._sent: dict[str, tuple[str, str, float]] = {}  # node id -> (digest, own key, when)

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

    # -- assignments -----------------------------------------------------------------
    # An agent long-polls with the digest of the last answer it got; the digest is made from
    # object ids and versions (never from serialising the answer), so checking whether a
    # node's view changed costs O(its tasks + services), and the answer is serialised only
    # when it is sent, from cached pieces (a task's spec once per spec object, each service's
    # endpoint entry once per change of that service or its tasks).

    def view(self, node_id: str) -> "View":
        st = self.store
        mine = st.tasks_of_node(node_id)
        tasks = [t for t in mine if t.status.state not in ts.TERMINAL]
        history = sorted(t.id for t in mine if t.status.state in (ts.COMPLETE, ts.FAILED))
        config_names, secret_names, net_names = set(), set(), set()
        for t in tasks:
            c = t.spec.container
            if c.configs:
                config_names |= {r.source for r in c.configs}
            if c.secrets:
                secret_names |= {r.source for r in c.secrets}
            net_names |= {a.network for a in t.spec.networks}
        configs = {name: obj for name in sorted(config_names) if (obj := st.by_name(ConfigObj, name)) is not None}
        secrets = {name: obj for name in sorted(secret_names) if (obj := st.by_name(SecretObj, name)) is not None}
        networks = [n for n in st.all(NetworkObj) if n.spec.name in net_names]
        key = hashlib.sha256()
        for part in ([f"{t.id}:{t.version}" for t in tasks], [f"{o.id}:{o.version}" for o in configs.values()],
                     [f"{o.id}:{o.version}" for o in secrets.values()], [f"{n.id}:{n.version}" for n in networks],
                     history):
            key.update(",".join(part).encode())
            key.update(b"|")
        own = key.hexdigest()
        ep_key, ep_json, backends = self._endpoints_for(frozenset(net_names))
        digest = hashlib.sha256(f"{own}|{ep_key}".encode()).hexdigest()
        return View(st.rev, tasks, configs, secrets, networks, own, ep_key, ep_json, backends, digest, history)

    def answer(self, node_id: str, v: "View") -> str:
        """The assignments answer for view `v`, as JSON text; remembers what the node was sent."""
        return b"".join(self.answer_parts(node_id, v)).decode()

    def answer_parts(self, node_id: str, v: "View") -> list[bytes]:
        """The answer as UTF-8 JSON in pieces; the (large) endpoints piece is shared by every
        node with the same networks, not copied per answer."""
        st = self.store
        configs = {name: base64.b64encode(obj.data).decode() for name, obj in v.configs.items()}
        secrets = {}
        for name in v.secrets:
            data = self.cluster.secret_bytes(name)
            if data is not None:
                secrets[name] = base64.b64encode(data).decode()
        networks = json.dumps([n.model_dump(mode="json") for n in v.networks], default=str)
        self._sent[node_id] = (v.digest, v.own_key, time.monotonic())
        head = (f'{{"rev":{v.rev},"tasks":[{",".join(st.task_json(t) for t in v.tasks)}],'
                f'"configs":{json.dumps(configs)},"secrets":{json.dumps(secrets)},"networks":{networks},'
                f'"history":{json.dumps(v.history)},"endpoints":')
        return [head.encode(), v.endpoints_json, f',"digest":"{v.digest}"}}'.encode()]

    def endpoint_hold(self, node_id: str, v: "View", known: str | None) -> float:
        """Seconds to hold back an answer whose only news for the node are other services'
        endpoints (replicas starting elsewhere). Below a few hundred replicas this is at most a
        few milliseconds; with N replicas the endpoint table every node gets is O(N), so the
        updates are spaced out (N/10,000 s, at most 10 s) rather than re-sent to every node on
        every change. The node's own tasks, configs, secrets and networks are never held."""
        sent = self._sent.get(node_id)
        if sent is None or sent[0] != known or sent[1] != v.own_key:
            return 0.0
        interval = min(ENDPOINTS_MAX_HOLD, v.backends / ENDPOINTS_PER_SECOND)
        return sent[2] + interval - time.monotonic()

    def assignments(self, node_id: str) -> dict[str, Any]:
        """The node's assignments as a dict (the same content `answer` sends)."""
        return json.loads(self.answer(node_id, self.view(node_id)))

    def endpoints(self) -> list[dict]:
        """Every service's VIPs, ports and running replicas."""
        self._refresh_endpoints()
        return [e[1] for e in self._ep_entries.values()]

    def _refresh_endpoints(self) -> None:
        """Per-service endpoint entries, recomputed only for services that changed (once per revision)."""
        st = self.store
        if self._ep_rev == st.rev:
            return
        entries = {}
        for svc in st.all(Service):
            key = (svc.version, st.service_seq(svc.id))
            old = self._ep_entries.get(svc.id)
            if old is not None and old[0] == key:
                entries[svc.id] = old
                continue
            entry = self._endpoint(svc)
            entries[svc.id] = (key, entry, json.dumps(entry, default=str), len(entry["backends"]))
        self._ep_entries = entries
        self._ep_rev = st.rev
        self._ep_views = {}

    def _endpoints_for(self, net_names: frozenset[str]) -> tuple[str, bytes, int]:
        """(key, JSON list, replicas) of the endpoints a node on `net_names` needs: services on
        those networks, and every service with an ingress port (the mesh answers on every node)."""
        self._refresh_endpoints()
        hit = self._ep_views.get(net_names)
        if hit is None:
            chosen = [e for e in self._ep_entries.values()
                      if e[1]["ingress"] or net_names.intersection(e[1]["networks"])]
            key = hashlib.sha256(",".join(f"{e[1]['service_id']}:{e[0][0]}:{e[0][1]}" for e in chosen)
                                 .encode()).hexdigest()
            hit = self._ep_views[net_names] = (key, ("[" + ",".join(e[2] for e in chosen) + "]").encode(),
                                               sum(e[3] for e in chosen))
        return hit

    def _endpoint(self, svc: Service) -> dict:
        backends = []
        for t in self.store.tasks_of_service(svc.id):
            if t.status.state != ts.RUNNING or t.desired_state != ts.RUNNING:
                continue
            if t.status.health not in (None, "healthy"):
                continue
            backends.append({"task_id": t.id, "node_id": t.node_id, "addresses": t.status.addresses})
        return {
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
        }

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
