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

Services and replicas are numbered by the log (its epoch) so that the event every node
receives for every replica is ~30 bytes: at 100,000 replicas on 1,000 nodes the table the
nodes receive in all is what matters, not one answer.

Events are produced in O(changes) from the store's change feed, encoded once and kept as
immutable byte chunks (one per sync), so an answer is a list of shared chunks, never a copy
per node. When the log outgrows the live table it is compacted into a snapshot of the
table (positions at or after the snapshot still resume; older ones get the snapshot). A
position carries the log's epoch, which changes when the manager restarts: an agent with
another epoch gets the snapshot (``full``) and starts its table afresh.
"""
from __future__ import annotations

import bisect
import json
import secrets
from dataclasses import dataclass
from typing import Optional

from shoal.core import task_states as ts
from shoal.model.objects import Service, Task
from shoal.store import Store

COMPACT_MIN_EVENTS = 10_000  # never compact a log shorter than this
COMPACT_FACTOR = 2  # compact once the log holds more than this many events per live entry


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


def is_backend(t: Task) -> bool:
    """A replica takes traffic once it runs, is meant to, and is not known to be unhealthy."""
    return (t.status.state == ts.RUNNING and t.desired_state == ts.RUNNING
            and t.status.health in (None, "healthy"))


@dataclass
class Slice:
    """The events an agent at some position still needs, as shared JSON chunks."""
    epoch: str
    seq: int  # the position after these events
    full: bool  # a snapshot: the agent drops its table first
    chunks: list[bytes]

    def parts(self) -> list[bytes]:
        """`{"epoch":…,"seq":…,"full":…,"events":[…]}` as pieces (chunks shared, not copied)."""
        out = [f'{{"epoch":"{self.epoch}","seq":{self.seq},"full":{"true" if self.full else "false"},"events":['
               .encode()]
        for i, c in enumerate(self.chunks):
            if i:
                out.append(b",")
            out.append(c)
        out.append(b"]}")
        return out


class EndpointLog:
    def __init__(self, store: Store):
        self.store = store
        self.feed = store.change_feed()
        self.epoch = secrets.token_hex(6)
        self.seq = 0
        self.meta: dict[str, str] = {}  # service id -> meta JSON (as last sent)
        self.number: dict[str, int] = {}  # service id -> its number k in this log
        self.networks: dict[str, list[str]] = {}  # service id -> its networks (address order)
        self.backends: dict[str, dict[str, tuple[int, str]]] = {}  # service id -> task id -> (h, event)
        self._next = 0  # numbers for services and replicas
        self.live = 0  # backends in the table
        # chunk i holds events (starts[i], ends[i]]; the first chunk is the snapshot at `base`.
        self.chunks: list[bytes] = []
        self.ends: list[int] = []
        self.base = 0
        self.events = 0  # events in the log (for compaction)
        # The log before the last compaction, kept until the next one: agents polling every
        # few seconds are all just behind a compaction point, and each would otherwise get
        # the whole table again (1,000 nodes x a 100,000-replica table).
        self._prev: Optional[tuple[list[bytes], list[int], int]] = None
        self._snap = 0  # 1 when chunks[0] is the snapshot
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
        self.seq = 1
        self._compact()

    def _num(self) -> int:
        self._next += 1
        return self._next

    def _set_meta(self, svc: Service) -> Optional[str]:
        """Record the service's meta; its "s" event when it is new or changed, else None."""
        meta = service_meta(svc)
        text = json.dumps(meta, default=str)
        if self.meta.get(svc.id) == text:
            return None
        self.meta[svc.id] = text
        if svc.id not in self.number:
            self.number[svc.id] = self._num()
        self.networks[svc.id] = meta["networks"]
        self.backends.setdefault(svc.id, {})
        return f'["s",{self.number[svc.id]},{text}]'

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
        if not task_ids and not service_ids:
            return False
        st = self.store
        events: list[str] = []
        for sid in service_ids:
            svc = st.get(Service, sid)
            if svc is None:
                if sid in self.meta:
                    del self.meta[sid], self.networks[sid]
                    self.live -= len(self.backends.pop(sid, {}))
                    events.append(f'["x",{self.number.pop(sid)}]')
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
        self.seq += len(events)
        self.events += len(events)
        self.chunks.append(",".join(events).encode())
        self.ends.append(self.seq)
        if self.events > max(COMPACT_MIN_EVENTS, COMPACT_FACTOR * (self.live + len(self.meta))):
            self._compact()
        return True

    def _service_of(self, tid: str) -> Optional[str]:
        """The service a deleted task was a backend of (deleted tasks are rare: a scan is fine)."""
        for sid, table in self.backends.items():
            if tid in table:
                return sid
        return None

    def _compact(self) -> None:
        """Replace the log by one snapshot of the table, at the current position."""
        parts = [f'["s",{self.number[sid]},{meta}]' for sid, meta in self.meta.items()]
        for table in self.backends.values():
            parts.extend(e for _h, e in table.values())
        if self.chunks:
            self._prev = (self.chunks, self.ends, self.base)
        self.chunks = [",".join(parts).encode()] if parts else []
        self.ends = [self.seq] if parts else []
        self._snap = len(self.chunks)
        self.base = self.seq
        self.events = len(parts)

    # --------------------------------------------------------------------- read
    def has_news(self, epoch: str, seq: int) -> bool:
        return epoch != self.epoch or seq < self.seq

    def since(self, epoch: str, seq: int) -> Slice:
        """The events after position (epoch, seq), or the whole table when that position is
        unknown here (another epoch, or compacted away)."""
        if epoch == self.epoch and self.base <= seq <= self.seq:
            i = bisect.bisect_right(self.ends, seq)
            return Slice(self.epoch, self.seq, False, self.chunks[i:])
        if epoch == self.epoch and self._prev is not None and self._prev[2] <= seq < self.base:
            chunks, ends, _base = self._prev
            i = bisect.bisect_right(ends, seq)
            return Slice(self.epoch, self.seq, False, chunks[i:] + self.chunks[self._snap:])
        # The snapshot plus the events since: both replay to the same table.
        return Slice(self.epoch, self.seq, True, list(self.chunks))

    def table(self) -> list[dict]:
        """The table as an agent rebuilds it from the whole log (for tests and debugging)."""
        from shoal.protocol.endpoint_table import EndpointTable
        table = EndpointTable()
        table.apply(json.loads(b"".join(self.since("", 0).parts())))
        return table.entries()
