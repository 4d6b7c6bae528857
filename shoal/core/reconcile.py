"""Reconcile one service: compare its tasks with what the spec and the nodes call for.

Level-triggered and pure: ``reconcile(service, tasks, nodes, now)`` looks only at its
arguments, and applying its Plan then reconciling again gives an empty plan.

Per slot (replicated: slot 1..replicas; global: one per eligible node) the rules are:
- a *live* task (running or on its way, still wanted) -> nothing to do;
- a task still *stopping* (desired shutdown, not terminated) -> wait for it, unless it is on
  a drained/down node (Swarm replaces those at once);
- no task, or the latest was deliberately stopped (update stop-first, drain, node loss,
  scale down then up) -> a new task at once;
- the latest ended on its own -> restart policy (shoal.core.restart): a replacement with
  ``attempt + 1`` and ``not_before = end + delay``; when the policy says no, the slot stays
  stopped until the spec changes.
Tasks on nodes that are down are lost (``plan.lost``: state unknown until the node reports
back), on nodes that are gone orphaned (``plan.orphan``), and replaced in the same plan; tasks on drained nodes, or on nodes that no longer satisfy the task's placement
constraints (a label removed), are shut down and replaced; slots above ``replicas`` are shut
down (highest first, all of them) and their history removed once stopped; each slot keeps
5 tasks of history. Jobs: run until ``replicas`` slots completed (global-job: one per node),
at most ``max_concurrent`` at once; completed tasks are never restarted; a spec change
re-runs the job. Rolling updates of out-of-date tasks are shoal.core.update's business.

Dependencies: with ``deps=(False, reason)`` new tasks are created in state ``new`` (the
scheduler only places ``pending`` ones) with ``reason`` as message (``plan.hold``); once the
dependencies are met, waiting tasks are released (``plan.release``: new -> pending).
"""
from __future__ import annotations

from typing import Optional, Sequence

from shoal.core.plan import IdFactory, Plan, hold_tasks, make_task, new_id
from shoal.core.restart import history_limit, restart_not_before, should_restart
from shoal.core.slots import STOPPED_DESIRED, by_slot, dirty_checker, is_live, is_stopping
from shoal.core.task_states import COMPLETE, NEW, ON_NODE, TERMINAL, UNKNOWN
from shoal.model.objects import Node, Service, Task
from shoal.core.constraints import ConstraintError, node_matches, parse_constraints

JOB_MODES = frozenset({"replicated-job", "global-job"})


def node_eligible(service: Service, node: Node) -> bool:
    """May a new task of this (global) service start on `node`?"""
    if node.state != "ready" or node.availability != "active":
        return False
    return constraints_ok(service, node)


def constraints_ok(service: Service, node: Node) -> bool:
    try:
        return node_matches(parse_constraints(service.spec.placement.constraints), node)
    except ConstraintError:
        return False


def task_constraints_ok(task: Task, node: Node) -> bool:
    """Does `node` still satisfy the constraints the task was placed with?"""
    exprs = task.spec.placement.constraints
    if not exprs:
        return True
    try:
        return node_matches(parse_constraints(exprs), node)
    except ConstraintError:
        return True  # validated at deploy; never stop a running task over an unparsable one


class _Pass:
    """State of one reconcile pass."""

    def __init__(self, service: Service, tasks: Sequence[Task], nodes: Sequence[Node], now: float,
                 id_factory: IdFactory) -> None:
        self.service, self.now, self.new_id = service, now, id_factory
        self.spec = service.spec
        self.job = self.spec.mode in JOB_MODES
        self.nodes = {n.id: n for n in nodes}
        self.dirty = dirty_checker(service)
        self.plan = Plan()
        self.ended: set[str] = set()  # ids this plan stops
        self.replace_now: set[str] = set()  # ...of which those whose slot may be refilled at once
        self.slots = by_slot(tasks)

    # -- helpers ---------------------------------------------------------------
    def stop(self, t: Task, replace_now: bool = False) -> None:
        if t.id not in self.ended:
            self.plan.shutdown.append(t.id)
            self.ended.add(t.id)
        if replace_now:
            self.replace_now.add(t.id)

    def live(self, t: Task) -> bool:
        return is_live(t) and t.id not in self.ended

    def blocks(self, t: Task) -> bool:
        """A task being stopped that the slot must wait for before it is refilled."""
        if t.id in self.replace_now or t.status.state not in ON_NODE:
            return False  # ended, or never reached a node: nothing to wait for
        if not (is_stopping(t) or t.id in self.ended):
            return False
        node = self.nodes.get(t.node_id) if t.node_id else None
        if t.node_id and (node is None or node.state == "down" or node.availability == "drain"):
            return False
        return True

    def desired_stopped(self, t: Task) -> bool:
        return t.desired_state in STOPPED_DESIRED or t.id in self.ended

    def current_complete(self, t: Task) -> bool:
        return t.status.state == COMPLETE and not self.dirty(t)

    # -- steps -----------------------------------------------------------------
    def lost_and_drained(self) -> None:
        for group in self.slots.values():
            for t in group:
                if t.status.state in TERMINAL or t.node_id is None:
                    continue
                node = self.nodes.get(t.node_id)
                if node is None or node.state == "down":
                    if t.status.state in ON_NODE:
                        if node is None:  # removed: nothing will report it again
                            self.plan.orphan.append(t.id)
                        elif t.status.state != UNKNOWN:  # down: it may still run there
                            self.plan.lost.append(t.id)
                        self.ended.add(t.id)
                        self.replace_now.add(t.id)
                    elif t.desired_state not in STOPPED_DESIRED:
                        self.stop(t, replace_now=True)
                elif node.availability == "drain" and t.desired_state not in STOPPED_DESIRED:
                    self.stop(t, replace_now=True)
                elif (t.desired_state not in STOPPED_DESIRED and self.spec.mode not in ("global", "global-job")
                      and not task_constraints_ok(t, node)):
                    # The node stopped satisfying the task's constraints (a label was removed):
                    # move it, as Swarm's constraint enforcer does. Global services: global_().
                    self.stop(t, replace_now=True)

    def slot_action(self, ts: list[Task]) -> Optional[tuple[float, int, Optional[Task]]]:
        """(not_before, attempt, ended task to mark shut down) for a new task, or None."""
        if any(self.live(t) for t in ts) or any(self.blocks(t) for t in ts):
            return None
        if self.job and any(self.current_complete(t) for t in ts):
            return None
        if not ts:
            return (0.0, 0, None)
        latest = ts[-1]
        if self.desired_stopped(latest):
            return (0.0, 0, None)
        # the latest task ended on its own, still desired running/complete
        if should_restart(latest, ts, self.now, self.job):
            return (restart_not_before(latest, self.now), latest.attempt + 1, latest)
        if self.dirty(latest):
            return (0.0, 0, latest)  # stopped by policy, but the spec has changed since: start afresh
        return None

    def create(self, slot: int, action: tuple[float, int, Optional[Task]], node_id: Optional[str] = None) -> None:
        not_before, attempt, old = action
        if old is not None:
            self.stop(old)
        self.plan.create.append(make_task(self.service, slot, self.now, self.new_id, node_id=node_id,
                                          not_before=not_before, attempt=attempt))

    def replicated(self) -> None:
        replicas = self.spec.replicas
        limit = None
        if self.job:
            limit = self.spec.max_concurrent or replicas
            self.stop_dirty_job_tasks()
        for key, ts in self.slots.items():
            slot = int(key) if key.isdigit() else 0
            if slot > replicas or slot == 0:
                self.gone(ts)
        wanted = []
        for slot in range(1, replicas + 1):
            self.stop_duplicates(self.slots.get(str(slot), []))
            action = self.slot_action(self.slots.get(str(slot), []))
            if action is not None:
                wanted.append((slot, action))
        if limit is not None:
            running = sum(1 for slot in range(1, replicas + 1)
                          for t in self.slots.get(str(slot), []) if self.live(t))
            wanted = wanted[:max(0, limit - running)]
        for slot, action in wanted:
            self.create(slot, action)

    def stop_duplicates(self, ts: list[Task]) -> None:
        """A slot runs one task of the current spec: stop older duplicates (e.g. two held tasks
        left by a race). Old-spec tasks beside a new one are the updater's (start-first)."""
        if len(ts) < 2:
            return  # (most slots, on every pass)
        current = sorted((t for t in ts if self.live(t) and not self.dirty(t)), key=lambda t: (t.created_at, t.id))
        for t in current[:-1]:
            self.stop(t)

    def stop_dirty_job_tasks(self) -> None:
        for ts in self.slots.values():
            for t in ts:
                if self.live(t) and self.dirty(t):
                    self.stop(t)

    def global_(self) -> None:
        if self.job:
            self.stop_dirty_job_tasks()
        for node in sorted(self.nodes.values(), key=lambda n: n.id):
            ts = self.slots.get(node.id, [])
            if not constraints_ok(self.service, node):
                for t in ts:
                    if self.live(t):
                        self.stop(t)
                continue
            if node.state != "ready" or node.availability != "active":
                continue  # paused / not ready: keep what runs, start nothing; drain handled above
            action = self.slot_action(ts)
            if action is not None:
                self.create(0, action, node_id=node.id)
        for key, ts in self.slots.items():  # nodes gone, or replicated-style slots
            if key not in self.nodes:
                self.gone(ts)

    def gone(self, ts: list[Task]) -> None:
        """A slot that should not exist: stop what runs on a node; once nothing does, delete
        the slot's tasks (tasks that never reached a node, or were orphaned, go at once)."""
        orphaned = set(self.plan.orphan)
        on_node = [t for t in ts if t.status.state in ON_NODE and t.id not in orphaned]
        for t in on_node:
            if not self.desired_stopped(t):
                self.stop(t)
        if not on_node:
            ids = {t.id for t in ts}
            self.plan.remove.extend(t.id for t in ts)
            self.plan.shutdown = [i for i in self.plan.shutdown if i not in ids]
            self.plan.orphan = [i for i in self.plan.orphan if i not in ids]
            self.ended |= ids

    def trim_history(self) -> None:
        limit = history_limit(self.spec.restart_policy)
        created: dict[str, int] = {}
        for t in self.plan.create:
            k = str(t.slot) if t.slot else (t.node_id or "")
            created[k] = created.get(k, 0) + 1
        orphaned = set(self.plan.orphan)
        touched = self.ended | orphaned
        replicated = self.spec.mode in ("replicated", "replicated-job")
        for key, ts in self.slots.items():
            gone = (replicated and (not key.isdigit() or int(key) > self.spec.replicas)) or \
                   (not replicated and key not in self.nodes)
            if gone:
                continue
            extra = len(ts) + created.get(key, 0) - limit
            if extra <= 0:
                continue
            # terminal once this plan is applied: already ended, orphaned now, or stopped before reaching a node
            old = [t for t in ts if t.status.state in TERMINAL or (t.id in touched and t.status.state not in ON_NODE)
                   or t.id in orphaned]
            removed = {t.id for t in old[:extra]}
            self.plan.remove.extend(t.id for t in old[:extra])
            if removed:  # removal wins over a stop in the same plan
                self.plan.shutdown = [i for i in self.plan.shutdown if i not in removed]
                self.plan.orphan = [i for i in self.plan.orphan if i not in removed]

    def dependencies(self, deps: tuple[bool, str]) -> None:
        ok, reason = deps
        waiting = [t for ts in self.slots.values() for t in ts if t.status.state == NEW and self.live(t)]
        if ok:
            self.plan.release.extend(t.id for t in waiting)
            return
        reason = reason or "waiting for dependencies"
        hold_tasks(self.plan, self.plan.create, reason)
        for t in waiting:
            if t.status.message != reason:
                self.plan.hold[t.id] = reason


def reconcile(service: Service, tasks: Sequence[Task], nodes: Sequence[Node], now: float,
              deps: tuple[bool, str] = (True, ""), id_factory: IdFactory = new_id) -> Plan:
    """The changes that bring `service`'s tasks (all of them, any state) in line with its spec."""
    p = _Pass(service, tasks, nodes, now, id_factory)
    p.lost_and_drained()
    if service.spec.mode in ("global", "global-job"):
        p.global_()
    else:
        p.replicated()
    p.trim_history()
    p.dependencies(deps)
    return p.plan
