"""Shared views over a service's tasks: slot keys, liveness, and whether a task is out of date.

A *slot key* is the slot number as a string for replicated services/jobs and the node id for
global ones. A task is *live* when it has not terminated and is still wanted (desired state
not shutdown/remove). A task is *dirty* when the spec it runs differs from the service's in
anything that reaches the container (replicas, update/rollback configs, service labels and
depends_on do not) — so scaling does not restart tasks and a rollback to an equal spec is a
no-op, as in Swarm, which compares task templates rather than version numbers.
"""
from __future__ import annotations

from typing import Callable, Iterable

from shoal.core.task_states import TERMINAL
from shoal.model.objects import Service, Task
from shoal.model.specs import ServiceSpec

STOPPED_DESIRED = frozenset({"shutdown", "remove"})
_NOT_IN_TASK = {"replicas", "max_concurrent", "update_config", "rollback_config", "labels", "depends_on"}


def slot_key(task: Task) -> str:
    return str(task.slot) if task.slot else (task.node_id or "")


def is_live(task: Task) -> bool:
    return task.status.state not in TERMINAL and task.desired_state not in STOPPED_DESIRED


def is_stopping(task: Task) -> bool:
    return task.status.state not in TERMINAL and task.desired_state in STOPPED_DESIRED


def task_template(spec: ServiceSpec) -> dict:
    return spec.model_dump(exclude=_NOT_IN_TASK)


def dirty_checker(service: Service) -> Callable[[Task], bool]:
    """A fast `is_dirty(task)` for one service (memoised per task spec_version)."""
    current = service.spec_version
    memo: dict[int, bool] = {}
    template: list[dict] = []

    def is_dirty(task: Task) -> bool:
        v = task.spec_version
        if v == current:
            return False
        got = memo.get(v)
        if got is None:
            if not template:
                template.append(task_template(service.spec))
            got = memo[v] = task_template(task.spec) != template[0]
        return got

    return is_dirty


def by_slot(tasks: Iterable[Task]) -> dict[str, list[Task]]:
    """Tasks grouped by slot key, each group oldest first."""
    out: dict[str, list[Task]] = {}
    for t in tasks:
        key = str(t.slot) if t.slot else (t.node_id or "")  # slot_key, inlined: every task, every pass
        group = out.get(key)
        if group is None:
            out[key] = [t]
        else:
            group.append(t)
    for group in out.values():
        if len(group) > 1:
            group.sort(key=_age)
    return out


def _age(t: Task) -> tuple:
    return (t.created_at, t.attempt, t.id)
