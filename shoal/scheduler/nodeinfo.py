"""What the scheduler knows about one node while it places a batch: free resources,
task counts (per service and overall), host ports in use and recent failures.

Built once per `schedule()` call from the node list and the tasks already on nodes, then
updated in memory as tasks are assigned, so a batch never over-commits a node.
"""
from __future__ import annotations

from typing import Iterable

from shoal.core.task_states import ACTIVE, FAILED
from shoal.model.objects import Node, Task
from shoal.model.specs import ServiceSpec

FAILURE_WINDOW = 300.0  # seconds: failures older than this are forgotten
FAILURE_THRESHOLD = 5  # this many recent failures of a service on a node sort the node last


def host_ports(spec: ServiceSpec) -> tuple[tuple[str, int], ...]:
    """The (protocol, port) pairs a task of this spec binds on its node (mode: host)."""
    return tuple((p.protocol, p.published) for p in spec.ports if p.mode == "host" and p.published)


class NodeInfo:
    __slots__ = ("node", "id", "cpu_free", "mem_free", "total", "by_service", "ports", "failures")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.id = node.id
        self.cpu_free = node.description.nano_cpus
        self.mem_free = node.description.memory_bytes
        self.total = 0
        self.by_service: dict[str, int] = {}
        self.ports: set[tuple[str, int]] = set()
        self.failures: dict[str, int] = {}  # service id -> failures in the last FAILURE_WINDOW

    def add(self, service_id: str, cpu: int, mem: int, ports: Iterable[tuple[str, int]] = ()) -> None:
        """Account for one more active task on this node."""
        self.cpu_free -= cpu
        self.mem_free -= mem
        self.total += 1
        self.by_service[service_id] = self.by_service.get(service_id, 0) + 1
        self.ports.update(ports)

    def penalised(self, service_id: str) -> bool:
        return self.failures.get(service_id, 0) >= FAILURE_THRESHOLD


def build_node_infos(nodes: Iterable[Node], tasks: Iterable[Task], now: float,
                     skip: frozenset[str] | set[str] = frozenset()) -> dict[str, NodeInfo]:
    """NodeInfo per node id. `tasks` may hold tasks in any state: tasks with a node and an
    active state count (resources, counts, ports); failed ones within the last 5 minutes count
    as failures of their service on that node. Task ids in `skip` are ignored."""
    infos = {n.id: NodeInfo(n) for n in nodes}
    cache: dict[tuple[str, int], tuple[int, int, tuple]] = {}
    horizon = now - FAILURE_WINDOW
    for t in tasks:
        nid = t.node_id
        if nid is None or t.id in skip:
            continue
        info = infos.get(nid)
        if info is None:
            continue
        state = t.status.state
        if state in ACTIVE:
            key = (t.service_id, t.spec_version)
            prof = cache.get(key)
            if prof is None:
                r = t.spec.resources.reservations
                prof = cache[key] = (r.nano_cpus, r.memory_bytes, host_ports(t.spec))
            info.add(t.service_id, prof[0], prof[1], prof[2])
        elif state == FAILED and t.status.timestamp >= horizon:
            info.failures[t.service_id] = info.failures.get(t.service_id, 0) + 1
    return infos
