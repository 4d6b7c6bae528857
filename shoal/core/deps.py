"""`depends_on` (beyond Swarm, which ignores it): is a service's dependency condition met?"""
from __future__ import annotations

from typing import Mapping, Sequence

from shoal.core.slots import by_slot, dirty_checker, is_live
from shoal.core.task_states import COMPLETE, RUNNING
from shoal.model.objects import Service, Task


def _healthy(task: Task) -> bool:
    if task.status.health == "healthy":
        return True
    hc = task.spec.container.healthcheck
    no_check = hc is None or hc.disable or (hc.test is not None and hc.test[:1] == ["NONE"])
    # A dependency without a health check counts as healthy once running (Shoal's choice,
    # rather than waiting forever); compose files should give it one.
    return no_check and task.status.health is None


def _completed(dep: Service, tasks: Sequence[Task]) -> bool:
    spec = dep.spec
    dirty = dirty_checker(dep)
    current = [t for t in tasks if not dirty(t)]
    ok = [t for t in current if t.status.state == COMPLETE and (t.status.exit_code or 0) == 0]
    if spec.mode == "replicated-job":
        return len({t.slot for t in ok}) >= spec.replicas
    if spec.mode == "global-job":
        return bool(ok) and not any(is_live(t) for t in current)
    # a one-shot service: every slot's latest task finished with exit 0
    slots = by_slot(current)
    return bool(slots) and all(g[-1].status.state == COMPLETE and (g[-1].status.exit_code or 0) == 0
                               for g in slots.values())


def condition_met(condition: str, dep: Service, tasks: Sequence[Task]) -> bool:
    running = [t for t in tasks if is_live(t) and t.status.state == RUNNING]
    if condition == "service_started":
        return bool(running)
    if condition == "service_healthy":
        want = dep.spec.replicas if dep.spec.mode == "replicated" else max(1, sum(1 for t in tasks if is_live(t)))
        return sum(1 for t in running if _healthy(t)) >= want
    if condition == "service_completed_successfully":
        return _completed(dep, tasks)
    raise ValueError(f"unknown depends_on condition {condition!r}")


def deps_status(service: Service, services_by_name: Mapping[str, Service],
                tasks_by_service: Mapping[str, Sequence[Task]]) -> tuple[bool, str]:
    """(True, "") when every `depends_on` condition holds, else (False, reason) for the first
    one that does not, e.g. "waiting for dependency app_db (service_healthy)".
    `tasks_by_service` is keyed by service id (service name also accepted)."""
    for dep in service.spec.depends_on:
        other = services_by_name.get(dep.service)
        if other is None:
            return False, f"waiting for dependency {dep.service} ({dep.condition}): no such service"
        tasks = tasks_by_service.get(other.id)
        if tasks is None:
            tasks = tasks_by_service.get(other.spec.name, ())
        if not condition_met(dep.condition, other, tasks):
            return False, f"waiting for dependency {dep.service} ({dep.condition})"
    return True, ""
