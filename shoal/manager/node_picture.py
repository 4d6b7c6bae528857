"""The scheduler's picture of every node, kept from the store's change feed.

`schedule()` needs, for each node, what its tasks hold (resources, per-service counts, host
ports) and its recent failures. Built from every task on every pass, that was a walk over
100,000 tasks each time the orchestrator placed a batch (5 % of the manager's time during a
deploy). This keeps the sums per node and updates them for the tasks written since the last
pass; each pass gets fresh NodeInfo objects made from the sums (the scheduler changes them
as it places). The result is what `build_node_infos` computes from the tasks (a unit test
holds the two equal).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from shoal.core.task_states import ACTIVE, FAILED
from shoal.model.objects import Node, Task
from shoal.scheduler.nodeinfo import FAILURE_WINDOW, NodeInfo, host_ports
from shoal.store import Store

Ports = tuple[tuple[str, int], ...]


class _Sums:
    __slots__ = ("cpu", "mem", "total", "by_service", "ports", "failures")

    def __init__(self) -> None:
        self.cpu = 0
        self.mem = 0
        self.total = 0
        self.by_service: dict[str, int] = {}
        self.ports: Counter = Counter()
        self.failures: dict[str, dict[str, float]] = {}  # service id -> task id -> when it failed


def _one_less(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class NodePicture:
    def __init__(self, store: Store):
        self.store = store
        self.feed = store.change_feed()
        self.reload()

    def reload(self) -> None:
        """Start again from every task in the store (at start, and when leadership changes)."""
        self.feed.take()
        self._sums: dict[str, _Sums] = {}
        # task id -> (node, service, cpu, mem, ports) when active, (node, service, when) when failed
        self._active: dict[str, tuple[str, str, int, int, Ports]] = {}
        self._failed: dict[str, tuple[str, str]] = {}
        self._profiles: dict[tuple[str, int], tuple[int, int, Ports]] = {}
        for n in self.store.all(Node):
            for t in self.store.tasks_of_node(n.id):
                self._add(t)

    def _profile(self, t: Task) -> tuple[int, int, Ports]:
        key = (t.service_id, t.spec_version)
        prof = self._profiles.get(key)
        if prof is None:
            r = t.spec.resources.reservations
            prof = self._profiles[key] = (r.nano_cpus, r.memory_bytes, host_ports(t.spec))
        return prof

    def _add(self, t: Task) -> None:
        nid = t.node_id
        if nid is None:
            return
        state = t.status.state
        if state in ACTIVE:
            cpu, mem, ports = self._profile(t)
            s = self._sums.get(nid) or self._sums.setdefault(nid, _Sums())
            s.cpu += cpu
            s.mem += mem
            s.total += 1
            s.by_service[t.service_id] = s.by_service.get(t.service_id, 0) + 1
            if ports:
                s.ports.update(ports)
            self._active[t.id] = (nid, t.service_id, cpu, mem, ports)
        elif state == FAILED:
            s = self._sums.get(nid) or self._sums.setdefault(nid, _Sums())
            s.failures.setdefault(t.service_id, {})[t.id] = t.status.timestamp
            self._failed[t.id] = (nid, t.service_id)

    def _drop(self, tid: str) -> None:
        held = self._active.pop(tid, None)
        if held is not None:
            nid, sid, cpu, mem, ports = held
            s = self._sums[nid]
            s.cpu -= cpu
            s.mem -= mem
            s.total -= 1
            _one_less(s.by_service, sid)
            if ports:
                s.ports.subtract(ports)
                for p in ports:
                    if s.ports[p] <= 0:
                        del s.ports[p]
        failed = self._failed.pop(tid, None)
        if failed is not None:
            nid, sid = failed
            by_task = self._sums[nid].failures.get(sid, {})
            by_task.pop(tid, None)
            if not by_task:
                self._sums[nid].failures.pop(sid, None)

    def follow(self) -> None:
        """Take in the tasks written or deleted since the last call."""
        tasks, _ = self.feed.take()
        get = self.store.get
        for tid in tasks:
            self._drop(tid)
            t = get(Task, tid)
            if t is not None:
                self._add(t)

    def infos(self, nodes: Iterable[Node], now: float, skip: Iterable[Task] = ()) -> dict[str, NodeInfo]:
        """Fresh NodeInfo per node, as `build_node_infos(nodes, <their tasks>, now, skip)` makes
        them; `skip`: tasks not to count (those being placed)."""
        self.follow()
        skipped: dict[str, list[tuple[str, str, int, int, Ports]]] = {}
        for t in skip:
            held = self._active.get(t.id)
            if held is not None:
                skipped.setdefault(held[0], []).append(held)
        horizon = now - FAILURE_WINDOW
        out: dict[str, NodeInfo] = {}
        for n in nodes:
            info = out[n.id] = NodeInfo(n)
            s = self._sums.get(n.id)
            if s is None:
                continue
            info.cpu_free -= s.cpu
            info.mem_free -= s.mem
            info.total = s.total
            info.by_service = dict(s.by_service)
            ports = s.ports
            for _nid, sid, cpu, mem, held_ports in skipped.get(n.id, ()):
                info.cpu_free += cpu
                info.mem_free += mem
                info.total -= 1
                _one_less(info.by_service, sid)
                if held_ports:
                    ports = ports - Counter(held_ports)  # (keeps the positive counts only)
            if ports:
                info.ports = set(+ports)
            for sid, by_task in s.failures.items():
                count = sum(1 for when in by_task.values() if when >= horizon)
                if count:
                    info.failures[sid] = count
        return out
