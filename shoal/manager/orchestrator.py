"""The manager's control loop: run the pure core over the store and write back what it decides.

Each pass: ask the core for every service's plan (reconcile,
restart, rolling update, dependency gate), apply the plans, ask the scheduler to place
pending tasks, and drop config/secret versions nothing pins anymore. All decisions come from `shoal.core` and `shoal.scheduler`;
this file only reads the store, calls them, and writes their answers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Optional

from shoal.core import task_states as ts
from shoal.core.deps import deps_status
from shoal.core.orchestrate import orchestrate
from shoal.core.plan import Plan, bare_status, plan_writes
from shoal.core.network_holders import network_holders
from shoal.ids import new_id
from shoal.manager.addresses import AddressBook
from shoal.manager.allocator import AllocationError
from shoal.manager.metrics import ManagerMetrics
from shoal.manager.node_picture import NodePicture
from shoal.manager.version_pruner import VersionPruner
from shoal.model.objects import NetworkObj, Node, Service, Task
from shoal.scheduler.pipeline import schedule
from shoal.store import Conflict, Store

log = logging.getLogger("shoal.orchestrator")

TICK = 1.0
# Passes look only at services whose service object or tasks changed (or that asked to be
# woken, or whose dependencies changed); a change of any node, or this many seconds since
# the last, makes a full pass over every service (the core is level-triggered: a full pass
# decides the same as the incremental ones did).
FULL_PASS_EVERY = 10.0
# ...stretched so that the sweeps over every service take at most this share of the time:
# one over 100,000 tasks plans for ~2.5 s, and every 10 s it was a quarter of the manager's
# CPU, during a deploy and in a cluster at rest alike. Never longer apart than the maximum.
FULL_PASS_SHARE = 0.05
FULL_PASS_MAX = 120.0
# One pass holds the event loop (heartbeats, agents' polls, the CLI) while it runs: past this
# budget it stops between services and the next pass goes on where it stopped; at most this
# many pending tasks are placed per pass. A deploy of 100,000 tasks then streams out to the
# nodes while it is still being planned, and nothing waits seconds for the loop.
PASS_BUDGET = 0.25
SCHEDULE_BATCH = 5000
RUNNABLE = (ts.RUNNING, ts.READY, ts.COMPLETE)  # the desired states of tasks the scheduler places


class Orchestrator:
    def __init__(self, store: Store, volume_nodes=None, metrics: Optional[ManagerMetrics] = None,
                 silent_nodes: Callable[[float], set[str]] = lambda now: set()):
        self.store = store
        self.metrics = metrics or ManagerMetrics()
        self.volume_nodes = volume_nodes or (lambda: {})
        self.silent_nodes = silent_nodes  # ready nodes not heard from lately: no new tasks there
        self.started = time.time()
        self._last_full = 0.0
        self._sweep: set[str] = set()  # services the current full pass has not planned yet
        self._sweep_cost = 0.0  # seconds of planning of the current full pass so far
        self._full_cost = 0.0  # ... of the last whole one
        self._wake: dict[str, float] = {}  # service id -> when its plan asked to be called again
        self._carry: set[str] = set()  # services a pass had no time for: the next pass starts there
        self._more = False  # the last pass stopped early (services or pending tasks left)
        self._cursor = 0  # where the next pass's window of pending tasks starts
        # Tasks this pass's plans created, pending, not written yet: the pass's scheduling
        # writes each once, placed or not (see _apply).
        self._fresh: dict[str, Task] = {}
        self._round_placed = 0  # tasks placed since the window round began
        self._idle_until = 0.0  # a round placed nothing: wait until then (unless something changes)
        self._idle_key: tuple = ()
        self.pruner = VersionPruner(store)
        self.addresses = AddressBook(store)
        self.picture = NodePicture(store)

    async def run(self) -> None:
        """Orchestrate while this manager leads (called again at each new leadership)."""
        self._forget()
        await self._run()

    def _forget(self) -> None:
        """What a previous leadership of this manager cached is stale: another manager led
        meanwhile and gave addresses, made and ended tasks (found in the lab: a manager leading
        again handed out an address the other leader had given, and the task failed to start)."""
        self.addresses = AddressBook(self.store)
        self.pruner = VersionPruner(self.store)
        self.picture.reload()
        self._last_full = 0.0  # the first pass looks at every service
        self._sweep, self._sweep_cost, self._full_cost = set(), 0.0, 0.0
        self._wake.clear()
        self._carry = set()
        self._more = False
        self._cursor = 0
        self._round_placed = 0
        self._idle_until, self._idle_key = 0.0, ()

    async def _run(self) -> None:
        while True:
            now = time.time()
            began = time.perf_counter()
            try:
                wake = self.tick(now)
                self.metrics.orchestrator_pass.observe(time.perf_counter() - began)
            except Conflict as e:  # another manager wrote meanwhile (several managers): again, on the new view
                log.info("orchestrator pass not committed: %s; passing again", e)
                wake = None
                await asyncio.sleep(0.1)
            except Exception:
                log.exception("orchestrator pass failed")
                wake = None
                await asyncio.sleep(1)
            if self._more:
                await asyncio.sleep(0.005)  # let the API and agents in, then go on
                continue
            seen = self.store.rev
            timeout = TICK if wake is None else max(0.01, min(TICK, wake - time.time()))
            await self.store.wait_for_change(seen, timeout)
            await asyncio.sleep(0.01)  # let a burst of writes land before the next pass

    # ------------------------------------------------------------------ one pass
    def tick(self, now: float, budget: Optional[float] = PASS_BUDGET) -> Optional[float]:
        """One pass; with a `budget` (seconds) it may stop early and leave the rest to the next
        pass (`self._more`); without one it does everything."""
        st = self.store
        wake: Optional[float] = None
        started = time.monotonic()
        self._more = False
        self._fresh = {}  # (a pass that failed left its own: its transaction was rolled back)
        with st.txn():
            changed, nodes_changed = st.take_changes()
            nodes = st.all(Node)
            services = st.all(Service)
            by_name = {s.spec.name: s for s in services}
            full = nodes_changed or now - self._last_full >= self.full_pass_every()
            if full:
                self._last_full = now
                self._sweep, self._sweep_cost = {s.id for s in services}, 0.0
                todo = services
            else:
                due = {sid for sid, at in self._wake.items() if at <= now}
                dirty = changed | due | self._carry
                dirty_names = {s.spec.name for s in services if s.id in dirty}
                todo = [s for s in services if s.id in dirty
                        or any(d.service in dirty_names for d in s.spec.depends_on)]
            needed = {s.id for s in todo}
            for s in todo:
                for d in s.spec.depends_on:
                    if d.service in by_name:
                        needed.add(by_name[d.service].id)
            tasks_by_service = {sid: st.tasks_of_service(sid) for sid in needed}
            self._carry = set()
            for i, svc in enumerate(todo):
                # (and no more new tasks than the pass can place: those it cannot are written
                # twice, pending then assigned; a pass planned 9,000-20,000 for a window of 5,000)
                if budget is not None and (time.monotonic() - started > budget
                                           or len(self._fresh) >= SCHEDULE_BATCH):
                    self._carry = {s.id for s in todo[i:]}
                    self._more = True
                    break
                deps = deps_status(svc, by_name, tasks_by_service)
                planning = time.perf_counter()
                plan = orchestrate(svc, tasks_by_service[svc.id], nodes, now, deps=deps, id_factory=new_id)
                if svc.id in self._sweep:
                    self._sweep.discard(svc.id)
                    self._sweep_cost += time.perf_counter() - planning
                    if not self._sweep:
                        self._full_cost = self._sweep_cost
                self._apply(plan, tasks_by_service[svc.id], now)
                if plan.wake_at is not None:
                    self._wake[svc.id] = plan.wake_at
                else:
                    self._wake.pop(svc.id, None)
            service_ids = {s.id for s in services}
            if self._sweep and not self._sweep <= service_ids:  # removed meanwhile
                self._sweep &= service_ids
                if not self._sweep:
                    self._full_cost = self._sweep_cost
            for sid in [sid for sid in self._wake if sid not in service_ids]:
                del self._wake[sid]
            if self._wake:
                wake = min(self._wake.values())
            self._collect_removed(now, service_ids, {n.id: n for n in nodes})
            if full:
                self.addresses.settle_nodes(network_holders(services, tasks_by_service, nodes, st.all(NetworkObj)))
            if self._schedule(now, nodes, SCHEDULE_BATCH if budget is not None else None):
                self._more = True
            self.pruner.prune(changed | needed)
        return wake

    def _refused(self, t: Task, reason: str, new: bool) -> None:
        """A pending task the scheduler could not place: the reason on it (a new task is
        written whatever its reason: it is not in the store yet)."""
        if t.status.err != reason:
            t = t.model_copy(update={"status": t.status.model_copy(update={"err": reason})})
        elif not new:
            return
        self.store.put(t, quiet=True)

    def full_pass_every(self) -> float:
        """Seconds between full passes: FULL_PASS_EVERY, or more when a sweep costs more than
        FULL_PASS_SHARE of that (it grows with the cluster's tasks), at most FULL_PASS_MAX."""
        return min(FULL_PASS_MAX, max(FULL_PASS_EVERY, self._full_cost / FULL_PASS_SHARE))

    def _apply(self, plan: Plan, tasks: list[Task], now: float) -> None:
        st = self.store
        puts, deletes = plan_writes(plan, {t.id: t for t in tasks}, now) if not plan.is_empty() else ([], [])
        for tid in deletes:
            st.delete(Task, tid)
        # Quiet: the service's next plan would only find what this one did (the core is
        # level-triggered); planning it again at once walked every task of a service just
        # created (100 of a deploy's ~470 plans of 1,000 tasks each).
        # A new task the scheduler may place is written by this pass's `_schedule`, once:
        # written here as pending and again as assigned, each of a deploy's tasks cost two
        # validations, two rows and two events (~8 % of the manager in a deploy of 100,000).
        fresh = self._fresh
        for t in puts:
            if t.version == 0 and t.status.state == ts.PENDING and t.desired_state in RUNNABLE \
                    and t.id not in fresh and st.get(Task, t.id) is None:
                fresh[t.id] = t
            else:
                st.put(t, quiet=True)
        if plan.service is not None:
            # The pass is synchronous inside one transaction: nobody changed the service meanwhile.
            st.put(plan.service)

    def _collect_removed(self, now: float, service_ids: set[str], nodes: dict[str, Node]) -> None:
        """Tasks of removed services: stop them on their nodes, then forget them."""
        st = self.store
        gone_services = [sid for sid in st.service_ids_with_tasks() if sid not in service_ids]
        for t in [t for sid in gone_services for t in st.tasks_of_service(sid)]:
            node = nodes.get(t.node_id or "")
            gone = node is None or node.state == "down"
            if ts.is_terminal(t.status.state) or t.status.state in (ts.NEW, ts.PENDING) or gone:
                st.delete(Task, t.id)
            elif t.desired_state != ts.REMOVE:
                st.put(t.model_copy(update={"desired_state": ts.REMOVE}))

    def _schedule(self, now: float, nodes: list[Node], batch: Optional[int] = None) -> bool:
        """Place pending tasks (at most `batch` of them); True when some were left for later.

        When a whole round over the pending tasks placed none of them (no suitable node), the
        next round waits a second, unless the nodes or the pending tasks change meanwhile:
        thousands of unplaceable tasks are not re-examined on every store write."""
        fresh, self._fresh = self._fresh, {}
        try:
            return self._place(now, nodes, batch, fresh)
        finally:  # what was not placed or refused is written as the plan made it
            for t in fresh.values():
                self.store.put(t, quiet=True)

    def _place(self, now: float, nodes: list[Node], batch: Optional[int], fresh: dict[str, Task]) -> bool:
        """_schedule's work; the tasks of `fresh` it writes, it takes out of it."""
        st = self.store
        pending = [t for t in st.pending_tasks() if t.desired_state in RUNNABLE]
        pending.extend(fresh.values())
        if not pending:
            return False
        # Nodes gone silent (not judged down yet) take no new tasks: the scheduler sees them as
        # not ready ("not available for new tasks"); their running tasks are left alone.
        silent = self.silent_nodes(now)
        if silent:
            nodes = [n.model_copy(update={"state": "unknown"}) if n.id in silent else n for n in nodes]
        idle_key = (len(pending), tuple((n.id, n.version) for n in nodes), tuple(sorted(silent)))
        if now < self._idle_until and idle_key == self._idle_key:
            return False
        left = False
        total = len(pending)
        if batch is not None and len(pending) > batch:
            # A window of the pending tasks per pass, moving on each pass, so tasks that cannot
            # be placed (no suitable node) do not hold back the ones behind them.
            start = self._cursor if self._cursor < len(pending) else 0
            pending = pending[start:start + batch]
            self._cursor = start + batch
            left = self._cursor < total
        else:
            self._cursor = 0
        # What the tasks on each node hold (resources, ports) and their recent failures (the
        # scheduler's failure penalty), kept from the store's changes (node_picture.py).
        infos = self.picture.infos(nodes, now, skip=[t for t in pending if t.status.state == ts.PENDING])
        # Where volumes are (a walk over every task) matters only to tasks that mount one.
        mounting = any(m.type == "volume" for t in pending for m in t.spec.container.mounts)
        result = schedule(pending, nodes, (), now, volume_nodes=self.volume_nodes() if mounting else {},
                          infos=infos)
        for tid, node_id in result.assignments.items():
            new = fresh.pop(tid, None)
            t = new or st.get(Task, tid)
            if t is None:
                continue
            try:
                addresses = self.addresses.for_task(t, node_id) if t.spec.networks else t.addresses
            except AllocationError as e:
                self._refused(t, f"no address for the task: {e}", new is not None)
                continue
            # Quiet: placing a task changes nothing the service's next plan depends on, so the
            # orchestrator is not woken for it (agents and endpoints still see the write).
            # (the status made without validation: the store validates the task it is given)
            status = bare_status(ts.ASSIGNED, now, "scheduler assigned task to node")
            st.put(t.model_copy(update={"node_id": node_id, "addresses": addresses, "status": status}), quiet=True)
        for tid, reason in result.unplaced.items():
            new = fresh.pop(tid, None)
            t = new or st.get(Task, tid)
            if t is not None:
                self._refused(t, reason, new is not None)
        self._round_placed += len(result.assignments)
        self.metrics.placements.inc(len(result.assignments))
        if not left:
            if self._round_placed == 0:
                self._idle_until, self._idle_key = now + 1.0, idle_key
            self._round_placed = 0
        return left
