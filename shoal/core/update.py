"""Rolling update and rollback, one pure step at a time.

``update_step(service, tasks, now)`` looks at the service's out-of-date (*dirty*, see
shoal.core.slots) live tasks and decides which to replace now. Between steps it keeps its
bookkeeping in ``Service.update_state`` (an ``UpdateState``), returned in
``plan.service`` together with the new ``update_status`` for the caller to persist.

Batches: a batch of up to ``parallelism`` slots (0 = all) starts when the previous batch has
finished and ``delay`` has passed since; a slot is finished when its new task runs (or it
failed and ``failure_action`` is continue). So at most ``parallelism`` slots are in flight.
- stop-first: the step shuts the old task down; reconcile fills the slot with a task of the
  new spec once the old one has stopped — the slot never holds two tasks at once.
- start-first: the step creates the new task next to the old one and shuts the old one down
  once the new one runs — the service never drops below its count.
Monitoring: a task of the new spec that fails, is rejected or exits before it has run for
``monitor`` seconds, or turns unhealthy within that time, is a failure. When failures /
slots in the update exceed ``max_failure_ratio``, ``failure_action`` applies: pause (the
update stays paused until the spec changes again), continue, or rollback (the service's
spec and previous_spec are swapped, spec_version bumped, and the next steps roll back with
``rollback_config``). The update completes once no slot is dirty and every new task has
been watched for ``monitor`` seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from shoal.core.plan import IdFactory, Plan, make_task, new_id
from shoal.core.slots import by_slot, dirty_checker, is_live, slot_key
from shoal.core.task_states import COMPLETE, FAILED, REJECTED, RUNNING
from shoal.model.objects import Node, Service, Task, UpdateState, UpdateStatus

UPDATING, PAUSED, COMPLETED = "updating", "paused", "completed"
ROLLBACK_STARTED, ROLLBACK_PAUSED, ROLLBACK_COMPLETED = "rollback_started", "rollback_paused", "rollback_completed"
_STOPPED_STATES = frozenset({PAUSED, COMPLETED, ROLLBACK_PAUSED, ROLLBACK_COMPLETED})


@dataclass
class UpdatePlan(Plan):
    """A Plan whose `service` (when set) carries the new update status and bookkeeping."""
    rollback: bool = False  # this step began a rollback: plan.service has spec and previous_spec swapped

    @property
    def status(self) -> Optional[UpdateStatus]:
        return self.service.update_status if self.service is not None else None


def start_rollback(service: Service, now: float, message: str = "manually requested rollback") -> Service:
    """The service rolled back to its previous spec (spec_version bumped), rollback begun.
    Raises ValueError when there is no previous spec."""
    if service.previous_spec is None:
        raise ValueError(f"service {service.spec.name} has no previous spec to roll back to")
    version = service.spec_version + 1
    return service.model_copy(update={
        "spec": service.previous_spec,
        "previous_spec": service.spec,
        "spec_version": version,
        "update_status": UpdateStatus(state=ROLLBACK_STARTED, started_at=now, message=message),
        "update_state": UpdateState(spec_version=version, rollback=True, started_at=now),
    })


def is_up(task: Task) -> bool:
    """Running, and healthy when it has a health check (Swarm keeps such a task "starting"
    until its first healthy probe): only then does it count as updated, and only then does
    start-first stop the task it replaces."""
    return task.status.state == RUNNING and task.status.health not in ("starting", "unhealthy")


def _key_order(key: str) -> tuple:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _nothing_to_roll(plan: UpdatePlan, service: Service, now: float) -> UpdatePlan:
    """No slot to update for a spec no update has begun on."""
    status = service.update_status
    if status is not None and status.state not in (COMPLETED, ROLLBACK_COMPLETED):
        # the spec changed to one every task already runs: nothing left to roll
        rb = status.state in (ROLLBACK_STARTED, ROLLBACK_PAUSED)
        plan.service = service.model_copy(update={
            "update_status": _finished(status, rb, now),
            "update_state": UpdateState(spec_version=service.spec_version, rollback=rb, started_at=now)})
    return plan


def update_step(service: Service, tasks: Sequence[Task], now: float, nodes: Optional[Sequence[Node]] = None,
                id_factory: IdFactory = new_id) -> UpdatePlan:
    plan = UpdatePlan()
    spec = service.spec
    if spec.mode not in ("replicated", "global"):
        return plan  # jobs re-run on a spec change (reconcile)
    dirty = dirty_checker(service)
    current = service.update_state
    ongoing = current is not None and current.spec_version == service.spec_version
    if ongoing and service.update_status is not None and service.update_status.state in _STOPPED_STATES:
        return plan  # finished or paused: nothing until the spec changes
    if not ongoing and not any(map(dirty, tasks)):
        # No update of this spec under way and no task out of date: what the slots below would
        # find (no slot to update), without grouping every task on every pass.
        return _nothing_to_roll(plan, service, now)
    if current is not None and current.moves and current.spec_version == service.spec_version:
        # a rebalance: the tasks of these slots made before it began count as out of date
        spec_dirty, moving, began = dirty, set(current.moves), current.started_at

        def dirty(t: Task) -> bool:  # noqa: F811 - the rebalance's view of "out of date"
            return spec_dirty(t) or (slot_key(t) in moving and t.created_at < began)
    unusable = set()
    if nodes is not None:
        present = {n.id: n for n in nodes}
        unusable = {t.id for t in tasks if t.node_id and (
            t.node_id not in present or present[t.node_id].state == "down"
            or present[t.node_id].availability == "drain")}
    slots = by_slot(tasks)
    if spec.mode == "replicated":
        scope = {str(i): slots.get(str(i), []) for i in range(1, spec.replicas + 1)}
    else:
        scope = {k: ts for k, ts in slots.items()
                 if any(is_live(t) and t.id not in unusable for t in ts) and not any(t.slot for t in ts)}

    def live(ts):
        return [t for t in ts if is_live(t) and t.id not in unusable]

    todo = sorted((k for k, ts in scope.items()
                   if any(dirty(t) for t in live(ts)) and not any(not dirty(t) for t in live(ts))),
                  key=_key_order)

    state, status = service.update_state, service.update_status
    if state is None or state.spec_version != service.spec_version:
        if not todo:
            return _nothing_to_roll(plan, service, now)
        state = UpdateState(spec_version=service.spec_version, started_at=now, total=len(scope))
        status = UpdateStatus(state=UPDATING, started_at=now, message="update in progress")
    elif status is not None and status.state in _STOPPED_STATES:
        return plan
    else:
        state = state.model_copy(deep=True)
        if status is None:
            status = UpdateStatus(state=ROLLBACK_STARTED if state.rollback else UPDATING, started_at=state.started_at)
        if not state.total:
            state.total = len(scope)
    old_state, old_status = service.update_state, service.update_status
    cfg = spec.rollback_config if state.rollback else spec.update_config

    # -- monitoring ---------------------------------------------------------------------
    new_failures = []
    watching = []  # monitor expiry times still ahead
    for key, ts in scope.items():
        for t in ts:
            if dirty(t) or t.created_at < state.started_at or t.id in state.failures:
                continue
            st = t.status.state
            since = state.running_since.get(t.id)
            if is_up(t) and since is None and t.desired_state == "running":
                since = state.running_since[t.id] = now
            ended_early = st in (FAILED, REJECTED) or (st == COMPLETE and t.desired_state == "running")
            if ended_early:
                end = t.status.timestamp or now
                if since is None or end - since < cfg.monitor:
                    new_failures.append(t.id)
            elif st == RUNNING and t.status.health == "unhealthy":
                if since is None or now - since < cfg.monitor:
                    new_failures.append(t.id)
            elif st == RUNNING and since is not None and now - since < cfg.monitor:
                watching.append(since + cfg.monitor)
    state.failures.extend(new_failures)

    if new_failures and len(state.failures) / max(state.total, 1) > cfg.max_failure_ratio:
        culprit = new_failures[0]
        action = cfg.failure_action
        if action == "rollback" and not state.rollback and service.previous_spec is not None:
            plan.service = start_rollback(
                service, now, f"update rolled back due to failure or early termination of task {culprit}")
            plan.rollback = True
            return plan
        if action != "continue":
            what = "rollback" if state.rollback else "update"
            status = UpdateStatus(state=ROLLBACK_PAUSED if state.rollback else PAUSED, started_at=status.started_at,
                                  message=f"{what} paused due to failure or early termination of task {culprit}")
            plan.service = service.model_copy(update={"update_status": status, "update_state": state})
            return plan

    # -- slots in flight ------------------------------------------------------------------
    failed = set(state.failures)
    for key in list(state.in_progress):
        ts = scope.get(key)
        if ts is None:
            del state.in_progress[key]  # scaled away
            continue
        began = state.in_progress[key]
        lv = live(ts)
        new = [t for t in ts if not dirty(t) and t.created_at >= began]
        if any(t.id in failed for t in new):
            finished = True  # given up on (failure_action continue); a start-first old task stays
        elif any(is_up(t) and not dirty(t) for t in lv):
            finished = True
            for t in lv:  # start-first: the new one runs, stop the old one now
                if dirty(t):
                    plan.shutdown.append(t.id)
        else:
            finished = False
        if finished:
            del state.in_progress[key]
            state.done.append(key)
            if not state.in_progress:
                state.batch_done_at = now

    # A slot not in flight whose current task is up but that still holds a live task of the
    # other spec (a start-first batch overtaken by a rollback or a new update): stop the extra.
    for key, ts in scope.items():
        if key in state.in_progress:
            continue
        lv = live(ts)
        if any(is_up(t) and not dirty(t) for t in lv):
            plan.shutdown.extend(t.id for t in lv if dirty(t) and t.id not in plan.shutdown)

    # -- next batch -----------------------------------------------------------------------
    done = set(state.done)
    waiting = [k for k in todo if k not in done and k not in state.in_progress]
    if waiting and not state.in_progress:
        ready_at = now if state.batch_done_at is None else state.batch_done_at + cfg.delay
        if now >= ready_at:
            batch = waiting if cfg.parallelism <= 0 else waiting[:cfg.parallelism]
            for key in batch:
                state.in_progress[key] = now
                lv = live(scope[key])
                if cfg.order == "start-first":
                    old = next(t for t in lv if dirty(t))
                    plan.create.append(make_task(service, old.slot, now, id_factory,
                                                 node_id=None if old.slot else old.node_id))
                else:
                    plan.shutdown.extend(t.id for t in lv if dirty(t))
            state.batch_done_at = None
        else:
            plan.wake(ready_at)

    if not waiting and not state.in_progress and not watching:
        status = _finished(status, state.rollback, now)
    elif status.state not in (UPDATING, ROLLBACK_STARTED):
        status = UpdateStatus(state=ROLLBACK_STARTED if state.rollback else UPDATING, started_at=status.started_at,
                              message="rollback in progress" if state.rollback else "update in progress")
    for at in watching:
        plan.wake(at)
    if state != old_state or status != old_status:
        plan.service = service.model_copy(update={"update_status": status, "update_state": state})
    return plan


def _finished(status: UpdateStatus, rollback: bool, now: float) -> UpdateStatus:
    what = "rollback" if rollback else ("rebalance" if status.message.startswith("rebalance") else "update")
    return UpdateStatus(state=ROLLBACK_COMPLETED if rollback else COMPLETED, started_at=status.started_at,
                        completed_at=now, message=f"{what} completed")


def start_rebalance(service: Service, slots: list[str], now: float) -> Service:
    """The service with a rebalance begun: `slots` are replaced as a rolling update."""
    return service.model_copy(update={
        "update_status": UpdateStatus(state=UPDATING, started_at=now, message="rebalance in progress"),
        "update_state": UpdateState(spec_version=service.spec_version, started_at=now, total=len(slots),
                                    moves=slots)})
