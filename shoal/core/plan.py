"""What one orchestrator pass wants done, as data — and a reference `apply_plan`.

The orchestrator never writes: it returns a Plan and the manager applies it to the store.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from shoal.core.task_states import NEW, ORPHANED, PENDING, SHUTDOWN
from shoal.model.objects import Service, Task, TaskStatus

IdFactory = Callable[[], str]
PENDING_MESSAGE = "pending task scheduling"


def new_id() -> str:
    return uuid.uuid4().hex[:25]


@dataclass
class Plan:
    # New tasks, already in state "pending" (or "new" when held, see `hold`). Replacements after
    # a failure carry `not_before` = failure time + restart delay: the scheduler places them at
    # once (reserving resources, as Swarm does), the agent starts them no earlier.
    create: list[Task] = field(default_factory=list)
    shutdown: list[str] = field(default_factory=list)  # set desired_state = "shutdown"
    remove: list[str] = field(default_factory=list)  # delete from the store (history beyond the limit)
    # Tasks on a node that is down or gone: move to state "orphaned" (manager) and desired
    # "shutdown"; their replacements are in `create` of the same plan.
    orphan: list[str] = field(default_factory=list)
    # Dependency gate: tasks kept in state "new" (the scheduler only takes "pending") with the
    # message to show (`hold`), and held tasks whose dependencies are now met: new -> pending.
    hold: dict[str, str] = field(default_factory=dict)
    release: list[str] = field(default_factory=list)
    wake_at: Optional[float] = None  # call again at this time (update delay / monitor), if nothing else happens
    service: Optional[Service] = None  # the service to persist (update status/bookkeeping, rollback swap)

    def is_empty(self) -> bool:
        """No change to make (wake_at aside)."""
        return not (self.create or self.shutdown or self.remove or self.orphan or self.hold
                    or self.release or self.service is not None)

    def wake(self, at: Optional[float]) -> None:
        if at is not None and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    def merge(self, other: "Plan") -> None:
        self.create.extend(other.create)
        for name in ("shutdown", "remove", "orphan", "release"):
            mine = getattr(self, name)
            seen = set(mine)
            mine.extend(x for x in getattr(other, name) if x not in seen)
        self.hold.update(other.hold)
        self.wake(other.wake_at)
        if other.service is not None:
            self.service = other.service


def make_task(service: Service, slot: int, now: float, id_factory: IdFactory = new_id, *,
              node_id: Optional[str] = None, not_before: float = 0.0, attempt: int = 0) -> Task:
    """A new task of `service` for a slot (or a node, global), in state pending."""
    spec = service.spec
    desired = "complete" if spec.mode in ("replicated-job", "global-job") else "running"
    return Task(id=id_factory(), created_at=now, updated_at=now, service_id=service.id,
                service_name=spec.name, slot=slot, node_id=node_id, desired_state=desired,
                status=TaskStatus(state=PENDING, timestamp=now, message=PENDING_MESSAGE),
                spec=spec, spec_version=service.spec_version, not_before=not_before, attempt=attempt)


def hold_tasks(plan: Plan, tasks: Iterable[Task], reason: str) -> None:
    """Keep freshly made tasks in state "new" with `reason` as their message."""
    for t in tasks:
        t.status.state = NEW
        t.status.message = reason
        plan.hold[t.id] = reason


def apply_plan(tasks: Iterable[Task], plan: Plan, now: float) -> list[Task]:
    """What the manager does with a plan, on copies (tests, simulations). Pure."""
    remove, shutdown, orphan, release = set(plan.remove), set(plan.shutdown), set(plan.orphan), set(plan.release)
    out = []
    for t in tasks:
        if t.id in remove:
            continue
        if t.id in shutdown or t.id in orphan or t.id in release or t.id in plan.hold:
            t = t.model_copy(deep=True)
            if t.id in orphan:
                t.status = TaskStatus(state=ORPHANED, timestamp=now, message="node is down")
                t.desired_state = SHUTDOWN
            if t.id in shutdown:
                t.desired_state = SHUTDOWN
                if t.status.state in (NEW, PENDING):  # never reached a node: the orchestrator may end it
                    t.status = TaskStatus(state=SHUTDOWN, timestamp=now, message="shutdown")
            if t.id in release and t.status.state == NEW:
                t.status = TaskStatus(state=PENDING, timestamp=now, message=PENDING_MESSAGE)
            if t.id in plan.hold and t.status.state == NEW:
                t.status.message = plan.hold[t.id]
        out.append(t)
    out.extend(t.model_copy(deep=True) for t in plan.create)
    return out
