"""One orchestrator pass for one service: rolling update step, then reconcile."""
from __future__ import annotations

from typing import Sequence

from shoal.core.plan import IdFactory, Plan, hold_tasks, new_id
from shoal.core.reconcile import reconcile
from shoal.core.update import update_step
from shoal.model.objects import Node, Service, Task


def orchestrate(service: Service, tasks: Sequence[Task], nodes: Sequence[Node], now: float,
                deps: tuple[bool, str] = (True, ""), id_factory: IdFactory = new_id) -> Plan:
    """Everything to do for `service` now. `tasks`: all its tasks, any state. `deps`: from
    shoal.core.deps.deps_status. When the update step changes the service (status,
    bookkeeping, or a rollback that swaps the spec), `plan.service` is the service to persist
    and reconcile has already worked against it."""
    up = update_step(service, tasks, now, nodes=nodes, id_factory=id_factory)
    current = up.service or service
    plan = reconcile(current, tasks, nodes, now, deps=deps, id_factory=id_factory)
    if not deps[0]:
        hold_tasks(up, up.create, deps[1] or "waiting for dependencies")
    plan.merge(up)
    return plan
