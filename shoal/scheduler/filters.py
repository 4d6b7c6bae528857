"""Feasibility filters, in Swarm's order, with Swarm's explanations.

Each filter: ``set_task(task, ctx) -> bool`` (does it apply to this task? remembers what it
needs), ``check(info) -> bool`` (may the task run on that node?), ``explain(n) -> str``
(why n nodes failed this filter). ``static`` filters depend only on the node and the task
spec, so their result can be cached per (spec, node) for a whole batch; the others depend
on what has been placed so far and are re-checked after every assignment.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shoal.model.objects import Task
from shoal.core.constraints import Constraint, parse_constraints, ConstraintError
from shoal.scheduler.nodeinfo import NodeInfo, host_ports


@dataclass
class SchedulingContext:
    now: float = 0.0
    # volume name -> ids of nodes where that (local, named) volume already exists
    volume_nodes: dict[str, set[str]] = field(default_factory=dict)
    # service id -> [(os, arch)] the service's image supports ("" = any); absent = unknown
    platforms: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def _nodes(n: int) -> str:
    return "1 node" if n == 1 else f"{n} nodes"


class Filter:
    name = "filter"
    static = True

    def set_task(self, task: Task, ctx: SchedulingContext) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, info: NodeInfo) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def explain(self, nodes: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class ReadyFilter(Filter):
    """The node is READY and its availability is active (not paused or drained)."""
    name = "ready"

    def set_task(self, task, ctx):
        return True

    def check(self, info):
        n = info.node
        return n.state == "ready" and n.availability == "active"

    def explain(self, nodes):
        return f"{_nodes(nodes)} not available for new tasks"


class ResourceFilter(Filter):
    """Reservations fit what the node has left (description minus active tasks' reservations)."""
    name = "resources"
    static = False

    def __init__(self) -> None:
        self.cpu = self.mem = 0

    def set_task(self, task, ctx):
        r = task.spec.resources.reservations
        self.cpu, self.mem = r.nano_cpus, r.memory_bytes
        return bool(self.cpu or self.mem)

    def check(self, info):
        return self.cpu <= info.cpu_free and self.mem <= info.mem_free

    def explain(self, nodes):
        return f"insufficient resources on {_nodes(nodes)}"


class ConstraintFilter(Filter):
    name = "constraints"

    def __init__(self) -> None:
        self.constraints: tuple[Constraint, ...] = ()

    def set_task(self, task, ctx):
        exprs = task.spec.placement.constraints
        if not exprs:
            return False
        try:
            self.constraints = parse_constraints(exprs)
        except ConstraintError:
            # Validated when the service was created; a bad one here matches no node
            # rather than silently matching every node.
            self.constraints = (Constraint("node.id", "==", "\0invalid"),)
        return True

    def check(self, info):
        node = info.node
        return all(c.matches(node) for c in self.constraints)

    def explain(self, nodes):
        return f"scheduling constraints not satisfied on {_nodes(nodes)}"


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


def _arch(a: str) -> str:
    return _ARCH_ALIASES.get(a, a)


class PlatformFilter(Filter):
    """The node's OS/arch is one the service's image supports (only when that is known)."""
    name = "platform"

    def __init__(self) -> None:
        self.platforms: list[tuple[str, str]] = []

    def set_task(self, task, ctx):
        self.platforms = [(o, _arch(a)) for o, a in ctx.platforms.get(task.service_id, [])]
        return bool(self.platforms)

    def check(self, info):
        d = info.node.description
        os_, arch = d.os, _arch(d.arch)
        return any((not o or o == os_) and (not a or a == arch) for o, a in self.platforms)

    def explain(self, nodes):
        return f"unsupported platform on {_nodes(nodes)}"


class HostPortFilter(Filter):
    """Published ports in mode: host are free on the node."""
    name = "host-ports"
    static = False

    def __init__(self) -> None:
        self.ports: tuple[tuple[str, int], ...] = ()

    def set_task(self, task, ctx):
        self.ports = host_ports(task.spec)
        return bool(self.ports)

    def check(self, info):
        used = info.ports
        return not any(p in used for p in self.ports)

    def explain(self, nodes):
        return f"host-mode port already in use on {_nodes(nodes)}"


class MaxReplicasFilter(Filter):
    name = "max-replicas"
    static = False

    def __init__(self) -> None:
        self.service_id = ""
        self.limit = 0

    def set_task(self, task, ctx):
        self.service_id = task.service_id
        self.limit = task.spec.placement.max_replicas_per_node
        return self.limit > 0

    def check(self, info):
        return info.by_service.get(self.service_id, 0) < self.limit

    def explain(self, nodes):
        return "max replicas per node limit exceed"  # Swarm's wording, no count


NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb", "smb3"})


class VolumeFilter(Filter):
    """Beyond Swarm: a local named volume that already exists on some node(s) pins the task
    to those nodes (its data lives there)."""
    name = "volumes"

    def __init__(self) -> None:
        self.allowed: list[tuple[str, set[str]]] = []
        self.failed_volume = ""

    def set_task(self, task, ctx):
        self.allowed = []
        # Global tasks belong to their node by definition: each node has its own copy.
        if not ctx.volume_nodes or task.spec.mode in ("global", "global-job"):
            return False
        for m in task.spec.container.mounts:
            if m.type != "volume" or not m.source or (m.volume_driver or "local") != "local":
                continue
            if (m.volume_driver_opts.get("type") or "").lower() in NETWORK_FS:
                continue  # the local driver mounting NFS/CIFS: the data is reachable from any node
            where = ctx.volume_nodes.get(m.source)
            if where:
                self.allowed.append((m.source, where))
        return bool(self.allowed)

    def check(self, info):
        for name, where in self.allowed:
            if info.id not in where:
                self.failed_volume = name
                return False
        return True

    def explain(self, nodes):
        name = self.failed_volume or (self.allowed[0][0] if self.allowed else "?")
        return f"volume {name} is on another node"


def default_filters() -> list[Filter]:
    """A fresh set of filter objects in Swarm's order."""
    return [ReadyFilter(), ResourceFilter(), ConstraintFilter(), PlatformFilter(),
            HostPortFilter(), MaxReplicasFilter(), VolumeFilter()]
