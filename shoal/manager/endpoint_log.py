"""The endpoint log: every service's VIPs, ports and running replicas, sent to agents as deltas.

Every node needs the whole cluster's endpoints (its DNS server answers for services
elsewhere, its mesh balances over replicas on other nodes), and that table is O(replicas):
sent whole on every change, it made the manager send nodes x replicas bytes per change
(11 MB to each of 1,000 nodes at 100,000 replicas). So the manager keeps it as a log of
small events, and each agent asks for the events after the position it has:

    ["s", k, meta]        a service (number k in this log) appeared, or its VIPs/ports changed
    [k, h, ip, …]         replica h of service k can take traffic (running, healthy): its
                          address on each of the service's networks, in `meta.networks` order
    ["-", h]              replica h cannot any more
    ["x", k]              service k is gone

A container a user started on an attachable network (`docker run --network`, reported by
its node's heartbeat in `NodeFacts.attached`) is in the log as a service of its own on that
network: endpoint mode dnsrr, its name and aliases, one replica (its address), no VIP and
no ports. So every node's DNS answers its name, as Swarm's does; it leaves the log when
the container goes, or when its node is down or removed.

Services and replicas are numbered by the log (its epoch) so that the event every node
receives for every replica is ~30 bytes: at 100,000 replicas on 1,000 nodes the table the
nodes receive in all is what matters, not one answer. Events come in O(changes) from the
store's change feed; chunks, positions and compaction are shoal/manager/change_log.py's.
"""
from __future__ import annotations

import json
from typing import Optional

from shoal.core import task_states as ts
from shoal.manager.change_log import ChangeLog, Slice
from shoal.model.objects import AttachedFact, Node, NodeFacts, Service, Task
from shoal.store import Store

__all__ = ["EndpointLog", "Slice", "attached_meta", "is_backend", "service_meta"]

ATTACHED = "c/"  # the log's key of an attached container: c/<node>/<network>/<name>


def service_meta(svc: Service) -> dict:
    """What agents need to know of a service besides its replicas."""
    spec = svc.spec
    return {
        "service_id": svc.id,
        "name": spec.name,
        "short_name": spec.short_name,
        "stack": spec.stack,
        "endpoint_mode": spec.endpoint_mode,
        "networks": [a.network for a in spec.networks],
        "aliases": {a.network: a.aliases for a in spec.networks},
        "virtual_ips": svc.virtual_ips,
        "ports": [{**p.model_dump(), "published": p.published or svc.published_ports.get(
            f"{p.target}/{p.protocol}")} for p in spec.ports],
        "ingress": any(p.mode == "ingress" for p in spec.ports),
        "traffic_policy": spec.traffic_policy,
    }


def attached_meta(key: str, a: AttachedFact) -> dict:
    """An attached container, as a service of its own (see the module's docstring)."""
    return {"service_id": key, "name": a.name, "short_name": a.name, "stack": None, "endpoint_mode": "dnsrr",
            "networks": [a.network], "aliases": {a.network: list(a.aliases)}, "virtual_ips": {}, "ports": [],
            "ingress": False, "traffic_policy": "cluster", "container": True}


def is_backend(t: Task) -> bool:
    """A replica takes traffic once it runs, is meant to, and is not known to be unhealthy."""
    return (t.status.state == ts.RUNNING and t.desired_state == ts.RUNNING
            and t.status.health in (None, "healthy"))


class EndpointLog(ChangeLog):
    def __init__(self, store: Store):
        super().__init__()
        self.store = store
        self.feed = store.change_feed()
        self.meta: dict[str, str] = {}  # service id -> meta JSON (as last sent)
        self.number: dict[str, int] = {}  # service id -> its number k in this log
        self.networks: dict[str, list[str]] = {}  # service id -> its networks (address order)
        self.backends: dict[str, dict[str, tuple[int, str]]] = {}  # service id -> task id -> (h, event)
        self._next = 0  # numbers for services and replicas
        self.live = 0  # backends in the table
        self._nodes_seen = (-1, -1)  # the store's node and node-facts write sequences last synced
        self._load()

    def _load(self) -> None:
        """Start from the store's current table (one snapshot chunk)."""
        self.feed.take()
        for svc in self.store.all(Service):
            self._set_meta(svc)
            tasks = self.backends[svc.id]
            for t in self.store.tasks_of_service(svc.id):
                if is_backend(t):
                    tasks[t.id] = self._backend(svc.id, t, None)
                    self.live += 1
        self._sync_attached([])
        self.seq = 1
        self.compact()

    def _num(self) -> int:
        self._next += 1
        return self._next

    def _set_meta(self, svc: Service) -> Optional[str]:
        """Record the service's meta; its "s" event when it is new or changed, else None."""
        return self._put_meta(svc.id, service_meta(svc))

    def _put_meta(self, key: str, meta: dict) -> Optional[str]:
        """Record the meta of entry `key` (a service, or an attached container); its "s" event
        when it is new or changed, else None."""
        text = json.dumps(meta, default=str)
        if self.meta.get(key) == text:
            return None
        self.meta[key] = text
        if key not in self.number:
            self.number[key] = self._num()
        self.networks[key] = meta["networks"]
        self.backends.setdefault(key, {})
        return f'["s",{self.number[key]},{text}]'

    def _forget(self, key: str) -> str:
        """Drop entry `key` and its replicas; its "x" event."""
        del self.meta[key], self.networks[key]
        self.live -= len(self.backends.pop(key, {}))
        return f'["x",{self.number.pop(key)}]'

    def _backend(self, sid: str, t: Task, old: Optional[tuple[int, str]]) -> tuple[int, str]:
        """(h, its add event): the replica's number stays while it is a backend."""
        h = old[0] if old is not None else self._num()
        addrs = t.status.addresses or {}
        ips = [addrs.get(n) for n in self.networks.get(sid, [])] or list(addrs.values())[:1]
        return h, json.dumps([self.number[sid], h, *ips])

    # ------------------------------------------------------------------ follow the store
    def sync(self) -> bool:
        """Turn the store's changes since the last sync into events; True when there were any."""
        task_ids, service_ids = self.feed.take()
        events: list[str] = []
        self._sync_attached(events)
        if not task_ids and not service_ids:
            if events:
                self.append(events)
            return bool(events)
        st = self.store
        for sid in service_ids:
            svc = st.get(Service, sid)
            if svc is None:
                if sid in self.meta:
                    events.append(self._forget(sid))
                continue
            ev = self._set_meta(svc)
            if ev is not None:
                events.append(ev)
        for tid in task_ids:
            t = st.get(Task, tid)
            if t is not None:
                sid = t.service_id
                table = self.backends.get(sid)
                if table is None:
                    continue  # its service is gone (or not yet known): nothing to route to
                if is_backend(t):
                    old = table.get(tid)
                    entry = self._backend(sid, t, old)
                    if old != entry:
                        if old is None:
                            self.live += 1
                        table[tid] = entry
                        events.append(entry[1])
                    continue
            else:
                sid = self._service_of(tid)
                if sid is None:
                    continue
                table = self.backends[sid]
            gone = table.pop(tid, None)
            if gone is not None:
                self.live -= 1
                events.append(f'["-",{gone[0]}]')
        if not events:
            return False
        self.append(events)
        return True

    def _sync_attached(self, events: list[str]) -> None:
        """Follow the attached containers of the nodes' facts (when a node or its facts were
        written: heartbeat times are written in batches, so this looks at every node about
        once a second, a dict comparison each)."""
        seen = (self.store.kind_seq(Node), self.store.kind_seq(NodeFacts))
        if seen == self._nodes_seen:
            return
        self._nodes_seen = seen
        want: dict[str, AttachedFact] = {}
        for facts in self.store.all(NodeFacts):
            if not facts.attached:
                continue
            node = self.store.get(Node, facts.id)
            if node is None or node.state == "down":
                continue  # as Swarm forgets a failed node's containers
            for a in facts.attached:
                want[f"{ATTACHED}{facts.id}/{a.network}/{a.name}"] = a
        for key in [k for k in self.meta if k.startswith(ATTACHED) and k not in want]:
            events.append(self._forget(key))
        for key, a in want.items():
            ev = self._put_meta(key, attached_meta(key, a))
            if ev is not None:
                events.append(ev)
            table = self.backends[key]
            old = table.get("")
            h = old[0] if old is not None else self._num()
            entry = (h, json.dumps([self.number[key], h, a.ip]))
            if old != entry:
                if old is None:
                    self.live += 1
                table[""] = entry
                events.append(entry[1])

    def _service_of(self, tid: str) -> Optional[str]:
        """The service a deleted task was a backend of (deleted tasks are rare: a scan is fine)."""
        for sid, table in self.backends.items():
            if tid in table:
                return sid
        return None

    def live_entries(self) -> int:
        return self.live + len(self.meta)

    def snapshot(self) -> list[str]:
        parts = [f'["s",{self.number[sid]},{meta}]' for sid, meta in self.meta.items()]
        for table in self.backends.values():
            parts.extend(e for _h, e in table.values())
        return parts

    # --------------------------------------------------------------------- read
    def table(self) -> list[dict]:
        """The table as an agent rebuilds it from the whole log (for tests and debugging)."""
        from shoal.protocol.endpoint_table import EndpointTable
        table = EndpointTable()
        table.apply(json.loads(b"".join(self.since("", 0).parts())))
        return table.entries()
