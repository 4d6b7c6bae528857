"""The scheduler: pending tasks + nodes -> assignments, Swarm-style (feasibility, then spread).

``schedule()`` is a pure function. Tasks are grouped by (service, spec version) — they have
the same requirements — and each group runs the filter pipeline once over all nodes
(static filter results are also cached across groups with the same static requirements).
Then tasks are placed one by one through the spread tree, re-checking only the chosen
node's dynamic filters (resources, host ports, max replicas) as the in-memory node state
changes, so a batch spreads evenly and never over-commits a node.

Global-mode tasks arrive with their node already set: they are checked on that node only.
Only tasks in state ``pending`` are considered; others (e.g. ``new`` tasks held back
waiting for a dependency) are ignored and appear in neither result map. ``not_before``
(restart delay) does not delay placement — as in Swarm the replacement is placed, and
its resources reserved, at once; the agent starts it no earlier than ``not_before``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional

from shoal.core.task_states import PENDING
from shoal.model.objects import Node, Task
from shoal.scheduler.filters import Filter, SchedulingContext, VolumeFilter, default_filters
from shoal.scheduler.nodeinfo import NodeInfo, build_node_infos, host_ports
from shoal.scheduler.strategy import build_tree


@dataclass
class SchedulingResult:
    assignments: dict[str, str] = field(default_factory=dict)  # task id -> node id
    unplaced: dict[str, str] = field(default_factory=dict)  # task id -> "no suitable node (...)"


class Pipeline:
    """The filters in Swarm's order; counts, per filter, the nodes it was first to reject."""

    def __init__(self, filters: Optional[list[Filter]] = None) -> None:
        self.filters = filters if filters is not None else default_filters()
        self.active: list[Filter] = []
        self.failures: Counter = Counter()

    def set_task(self, task: Task, ctx: SchedulingContext) -> None:
        self.active = [f for f in self.filters if f.set_task(task, ctx)]
        self.failures = Counter()

    @property
    def static(self) -> list[Filter]:
        return [f for f in self.active if f.static]

    @property
    def dynamic(self) -> list[Filter]:
        return [f for f in self.active if not f.static]

    def process(self, info: NodeInfo) -> bool:
        for f in self.active:
            if not f.check(info):
                self.failures[f] += 1
                return False
        return True

    def explain(self) -> str:
        order = {f: i for i, f in enumerate(self.active)}
        ranked = sorted(self.failures.items(), key=lambda kv: (-kv[1], order[kv[0]]))
        return "; ".join(f.explain(n) for f, n in ranked)


def no_suitable_node(explanation: str) -> str:
    return f"no suitable node ({explanation})" if explanation else "no suitable node"


def _static_key(task: Task, ctx: SchedulingContext, pipeline: Pipeline) -> tuple:
    vols = ()
    for f in pipeline.active:
        if isinstance(f, VolumeFilter):
            vols = tuple((name, frozenset(where)) for name, where in f.allowed)
    return (tuple(task.spec.placement.constraints),
            tuple(ctx.platforms.get(task.service_id, ())), vols)


def schedule(pending: Iterable[Task], nodes: Iterable[Node], tasks: Iterable[Task], now: float,
             volume_nodes: Optional[dict[str, set[str]]] = None,
             platforms: Optional[dict[str, list[tuple[str, str]]]] = None,
             filters: Optional[list[Filter]] = None,
             infos: Optional[dict[str, NodeInfo]] = None) -> SchedulingResult:
    """Place `pending` tasks on `nodes`.

    `tasks`: tasks already in the cluster, any state (active ones with a node count towards
    resources, per-service and total counts and host ports; recently failed ones towards the
    failure penalty). Pending tasks that also appear in `tasks` are not double-counted.
    `volume_nodes`: local named volume -> nodes where it exists. `platforms`: service id ->
    supported (os, arch) of its image, when known. `infos`: the nodes' pictures made already
    (what `build_node_infos(nodes, tasks, now, skip=pending)` returns; the manager keeps them
    from the store's changes instead of walking every task), changed in place as tasks are placed.
    """
    ctx = SchedulingContext(now=now, volume_nodes=volume_nodes or {}, platforms=platforms or {})
    pending = [t for t in pending if t.status.state == PENDING]
    result = SchedulingResult()
    if infos is None:
        infos = build_node_infos(nodes, tasks, now, skip={t.id for t in pending})
    ordered = sorted(infos.values(), key=lambda i: i.id)
    pipeline = Pipeline(filters)

    groups: dict[tuple, list[Task]] = {}
    preassigned: list[Task] = []
    for t in pending:
        if t.node_id is not None:
            preassigned.append(t)
        else:
            groups.setdefault((t.service_id, t.spec_version), []).append(t)

    for t in preassigned:
        pipeline.set_task(t, ctx)
        info = infos.get(t.node_id)
        if info is None:
            result.unplaced[t.id] = f"no suitable node (node {t.node_id} not found)"
        elif pipeline.process(info):
            r = t.spec.resources.reservations
            info.add(t.service_id, r.nano_cpus, r.memory_bytes, host_ports(t.spec))
            result.assignments[t.id] = info.id
        else:
            result.unplaced[t.id] = no_suitable_node(pipeline.explain())

    static_cache: dict[tuple, list[NodeInfo]] = {}
    for (service_id, _), group in groups.items():
        first = group[0]
        pipeline.set_task(first, ctx)
        static, dynamic = pipeline.static, pipeline.dynamic
        skey = _static_key(first, ctx, pipeline)
        candidates = static_cache.get(skey)
        if candidates is None:
            candidates = static_cache[skey] = [
                i for i in ordered if all(f.check(i) for f in static)]
        if dynamic:
            def fits(i: NodeInfo, _dyn=dynamic) -> bool:
                for f in _dyn:
                    if not f.check(i):
                        return False
                return True
            feasible = [i for i in candidates if fits(i)]
        else:
            def fits(i: NodeInfo) -> bool:
                return True
            feasible = candidates
        r = first.spec.resources.reservations
        cpu, mem, ports = r.nano_cpus, r.memory_bytes, host_ports(first.spec)

        def assign(i: NodeInfo) -> None:
            i.add(service_id, cpu, mem, ports)

        tree = build_tree(feasible, service_id, first.spec.placement.preferences)
        assignments = result.assignments
        for n, t in enumerate(group):
            info = tree.take(fits, assign)
            if info is None:
                pipeline.failures = Counter()
                for i in ordered:
                    pipeline.process(i)
                reason = no_suitable_node(pipeline.explain())
                for rest in group[n:]:
                    result.unplaced[rest.id] = reason
                break
            assignments[t.id] = info.id
    return result
