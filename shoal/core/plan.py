"""What one orchestrator pass wants done, as data, and what applying it writes.

The orchestrator's core never writes: it returns a Plan; `plan_writes` turns a plan into the
task writes (checked against the state table), which the manager's loop puts in the store
and the tests apply to lists — one applier for both.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

from shoal.core.task_states import (MANAGER, NEW, ORCHESTRATOR, ORPHANED, PENDING, REMOVE, REPORTED, SHUTDOWN,
                                    UNKNOWN, check_move, is_terminal)
from shoal.model.objects import Service, Task, TaskStatus
from shoal.model.unchecked import unchecked

IdFactory = Callable[[], str]
PENDING_MESSAGE = "pending task scheduling"
LOST_MESSAGE = "node is down: replaced elsewhere; the container may still run there until the node reports back"
ORPHANED_MESSAGE = "node removed from the cluster"


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
    # Tasks on a node that is down: move to state "unknown" (manager) and desired "shutdown";
    # tasks on a node that is gone (removed): "orphaned". Their replacements are in `create`.
    lost: list[str] = field(default_factory=list)
    orphan: list[str] = field(default_factory=list)
    # Dependency gate: tasks kept in state "new" (the scheduler only takes "pending") with the
    # message to show (`hold`), and held tasks whose dependencies are now met: new -> pending.
    hold: dict[str, str] = field(default_factory=dict)
    release: list[str] = field(default_factory=list)
    wake_at: Optional[float] = None  # call again at this time (update delay / monitor), if nothing else happens
    service: Optional[Service] = None  # the service to persist (update status/bookkeeping, rollback swap)

    def is_empty(self) -> bool:
        """No change to make (wake_at aside)."""
        return not (self.create or self.shutdown or self.remove or self.lost or self.orphan or self.hold
                    or self.release or self.service is not None)

    def wake(self, at: Optional[float]) -> None:
        if at is not None and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    def merge(self, other: "Plan") -> None:
        self.create.extend(other.create)
        for name in ("shutdown", "remove", "lost", "orphan", "release"):
            mine = getattr(self, name)
            seen = set(mine)
            mine.extend(x for x in getattr(other, name) if x not in seen)
        self.hold.update(other.hold)
        self.wake(other.wake_at)
        if other.service is not None:
            self.service = other.service


def make_task(service: Service, slot: int, now: float, id_factory: IdFactory = new_id, *,
              node_id: Optional[str] = None, not_before: float = 0.0, attempt: int = 0) -> Task:
    """A new task of `service` for a slot (or a node, global), in state pending.

    Made without pydantic's validation: every field is this function's own value of the
    right type, and the store validates each task it is given (`check_object`): validating
    it here as well was 2 % of the manager's time in a deploy of 100,000 tasks."""
    spec = service.spec
    desired = "complete" if spec.mode in ("replicated-job", "global-job") else "running"
    now = float(now)
    return unchecked(
        Task, id=id_factory(), version=0, created_at=now, updated_at=now, service_id=service.id,
        service_name=spec.name, slot=slot, node_id=node_id, desired_state=desired,
        status=bare_status(PENDING, now, PENDING_MESSAGE), spec=spec, spec_version=service.spec_version,
        not_before=float(not_before), attempt=attempt, addresses={})


def bare_status(state: str, timestamp: float, message: str) -> TaskStatus:
    """A TaskStatus made without validation (the store validates the task that carries it)."""
    return unchecked(TaskStatus, state=state, timestamp=float(timestamp), message=message, err="",
                     container_id=None, exit_code=None, health=None, addresses={})


def hold_tasks(plan: Plan, tasks: Iterable[Task], reason: str) -> None:
    """Keep freshly made tasks in state "new" with `reason` as their message."""
    for t in tasks:
        t.status.state = NEW
        t.status.message = reason
        plan.hold[t.id] = reason


def plan_writes(plan: Plan, current: Mapping[str, Task], now: float) -> tuple[list[Task], list[str]]:
    """What applying `plan` writes: (tasks to put, ids to delete). Pure: the orchestrator writes
    the answer to the store, tests and simulations to their lists. Every state change is checked
    against the state table for the actor that makes it."""
    deletes = [tid for tid in plan.remove if tid in current]
    gone = set(deletes)
    puts: dict[str, Task] = {}

    def change(tid: str, actor: str, desired: Optional[str] = None, status: Optional[TaskStatus] = None) -> None:
        t = puts.get(tid) or current.get(tid)
        if t is None or tid in gone:
            return
        update: dict = {}
        if desired is not None and t.desired_state != desired:
            update["desired_state"] = desired
        if status is not None and status != t.status:
            check_move(actor, t.status.state, status.state)
            update["status"] = status
        if update:
            puts[tid] = t.model_copy(update=update)

    for tid in plan.lost:
        t = current.get(tid)
        if t is not None and t.status.state in REPORTED:
            change(tid, MANAGER, SHUTDOWN, TaskStatus(
                state=UNKNOWN, timestamp=now, message=LOST_MESSAGE, err="", container_id=t.status.container_id,
                addresses=t.status.addresses))
    for tid in plan.orphan:
        t = current.get(tid)
        if t is not None and not is_terminal(t.status.state):
            change(tid, MANAGER, SHUTDOWN, TaskStatus(state=ORPHANED, timestamp=now, message=ORPHANED_MESSAGE,
                                                      err=ORPHANED_MESSAGE))
    for tid in plan.shutdown:
        t = puts.get(tid) or current.get(tid)
        if t is None:
            continue
        desired = t.desired_state if t.desired_state in (SHUTDOWN, REMOVE) else SHUTDOWN
        # never reached a node: the orchestrator ends it
        status = TaskStatus(state=SHUTDOWN, timestamp=now, message="shutdown") \
            if t.status.state in (NEW, PENDING) else None
        change(tid, ORCHESTRATOR, desired, status)
    for tid in plan.release:
        t = current.get(tid)
        if t is not None and t.status.state == NEW:
            change(tid, ORCHESTRATOR, None, TaskStatus(state=PENDING, timestamp=now, message=PENDING_MESSAGE))
    created = {t.id for t in plan.create}
    # A task held back by depends_on shows why in `service ps`'s ERROR column (as an
    # unschedulable task shows "no suitable node"), and in its message.
    for tid, reason in plan.hold.items():
        t = current.get(tid)
        if tid in created or t is None or t.status.state != NEW or (t.status.message, t.status.err) == (reason, reason):
            continue
        puts[tid] = t.model_copy(update={"status": t.status.model_copy(update={"message": reason, "err": reason})})
    out = list(puts.values())
    for t in plan.create:
        if t.id in plan.hold and t.status.state == NEW:
            t = t.model_copy(update={"status": t.status.model_copy(update={"err": plan.hold[t.id]})})
        out.append(t)
    return out, deletes


def apply_plan(tasks: Iterable[Task], plan: Plan, now: float) -> list[Task]:
    """The tasks after `plan` (copies; for tests and simulations): `plan_writes` applied to a list."""
    current = {t.id: t for t in tasks}
    puts, deletes = plan_writes(plan, current, now)
    for tid in deletes:
        current.pop(tid, None)
    for t in puts:
        current[t.id] = t.model_copy(deep=True)
    return list(current.values())
