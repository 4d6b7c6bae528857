"""Runs this node's tasks: makes its containers match what the manager assigns.

For each assigned task: desired running → prepare (pull if missing, files, container,
networks), honour `not_before`, start, report; desired shutdown/remove → stop (grace
period), remove. Containers of tasks no longer assigned are removed, except those of tasks
that ended on their own while they stay in their slot's history (`service logs`).
Engine events and a periodic resync catch what happens to containers meanwhile.

A node cut off from every manager keeps its tasks running (they may be replaced elsewhere
meanwhile: the duplicate window, see docs/nodes.md) — unless a service asks otherwise with
the label `shoal.stop-on-partition=true`: its tasks stop once the node has been cut off for
longer than the managers' down judgement.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from shoal.agent.engine import EngineError, NotFound
from shoal.agent.executor import L_MANAGED, L_NODE_ID, L_TASK_ID, UNHEALTHY_ERR, Executor, TaskRejected
from shoal.agent.networks import NetworkKeeper
from shoal.agent.reporter import StatusReporter
from shoal.core import task_states as ts
from shoal.model.objects import Task

log = logging.getLogger("shoal.agent")

RESYNC_PERIOD = 5.0
RUN_DESIRED = (ts.RUNNING, ts.READY, ts.COMPLETE)  # desired states that mean "run it" (COMPLETE: jobs)
STOP_ON_PARTITION = "shoal.stop-on-partition"


class TaskRunner:
    def __init__(self, executor: Executor, networks: NetworkKeeper, reporter: StatusReporter,
                 node_dns: Callable[[Task], Task], cut_off: Callable[[], tuple[float, float]]):
        self.executor = executor
        self.networks = networks
        self.reporter = reporter
        self.node_dns = node_dns  # the task with the node's DNS server first in its resolvers
        self.cut_off = cut_off  # (seconds since a manager answered, the managers' down judgement)
        self.assigned: dict[str, Task] = {}
        # (object name, version) -> data, for the versions this node's tasks pin.
        self.configs: dict[tuple[str, int], bytes] = {}
        self.secrets: dict[tuple[str, int], bytes] = {}
        self.history: set[str] = set()
        self.workers: dict[str, asyncio.Task] = {}
        self.stopping = False
        self._partition_stopped: set[str] = set()

    def report(self, task_id: str, state: str, **fields) -> None:
        self.reporter.report(task_id, state, **fields)

    # -- the assignment -----------------------------------------------------------------
    def assign(self, tasks: dict[str, Task], configs, secrets, history: set[str]) -> None:
        self.assigned, self.configs, self.secrets, self.history = tasks, configs, secrets, history
        for t in tasks.values():
            self.drive(t)
        # Containers of tasks the manager no longer assigns here: stop and remove them.
        for task_id, cid in self.executor.containers().items():
            if task_id not in self.assigned and task_id not in self.workers and task_id not in self.history:
                self._spawn(task_id, self._remove_orphan(task_id, cid))

    def _spawn(self, task_id: str, coro) -> None:
        w = asyncio.create_task(coro)
        self.workers[task_id] = w

        def done(fut: asyncio.Task) -> None:
            if self.workers.get(task_id) is fut:
                del self.workers[task_id]
            if not fut.cancelled() and fut.exception():
                log.error("worker for task %s failed: %r", task_id, fut.exception())
            t = self.assigned.get(task_id)
            if t is not None and not self.stopping:
                self.drive(t)  # the desired state may have changed while it worked

        w.add_done_callback(done)

    def state(self, t: Task) -> str:
        mine = self.reporter.last(t.id)
        if mine is not None and ts.RANK[mine] > ts.RANK[t.status.state]:
            return mine
        return t.status.state

    def drive(self, t: Task) -> None:
        if t.id in self.workers:
            return
        state = self.state(t)
        if ts.is_terminal(state):
            # A task that ended on its own keeps its stopped container while it is in the slot's
            # history (the manager lists those); the rest are removed.
            cid = self.executor.container_id(t.id)
            if cid and state not in (ts.COMPLETE, ts.FAILED):
                self._spawn(t.id, self._remove_orphan(t.id, cid))
            return
        if t.desired_state in RUN_DESIRED and t.id not in self._partition_stopped:
            if state in (ts.ASSIGNED, ts.ACCEPTED, ts.PREPARING, ts.READY, ts.STARTING):
                self._spawn(t.id, self._start(t))
            elif state == ts.RUNNING and not self.executor.container_id(t.id):
                self.report(t.id, ts.FAILED, err="container removed", message="container vanished")
        elif t.desired_state not in RUN_DESIRED:
            if state in ts.ON_NODE or state in (ts.NEW, ts.PENDING):
                self._spawn(t.id, self._stop(t))

    async def _start(self, t: Task) -> None:
        cid = self.executor.container_id(t.id)
        if cid:  # adopted after a restart, or created before a crash: observe, don't restart
            try:
                st = await self.executor.observe(cid)
            except NotFound:
                st = None
            if st is not None and st.state in (ts.RUNNING, ts.COMPLETE, ts.FAILED):
                self.report_status(t.id, st)
                return
        delay = t.not_before - time.time()
        if delay > 0:  # a restart: Swarm's restart delay passes before anything is prepared
            self.report(t.id, ts.ACCEPTED, message=f"restart delay {delay:.1f}s")
            await asyncio.sleep(delay)
        self.report(t.id, ts.ACCEPTED, message="accepted")
        try:
            nets = self.networks.ids_for(t)
            t = self.node_dns(t)
            await self.executor.prepare(t, self.configs, self.secrets, nets,
                                        report=lambda s, m: self.report(t.id, s, message=m))
        except TaskRejected as e:
            self.report(t.id, ts.REJECTED, err=e.reason, message="preparing")
            return
        current = self.assigned.get(t.id)
        if current is None or current.desired_state not in RUN_DESIRED:
            await self.executor.remove(t)
            self.report(t.id, ts.SHUTDOWN, message="shutdown before start")
            return
        self.report(t.id, ts.STARTING, message="starting")
        try:
            cid = await self.executor.start(t)
        except EngineError as e:
            self.report(t.id, ts.FAILED, err=f"starting container failed: {e}", message="starting")
            return
        try:
            st = await self.executor.observe(cid)
        except NotFound:
            self.report(t.id, ts.FAILED, err="container removed", message="started")
            return
        self.report_status(t.id, st)

    def report_status(self, task_id: str, st) -> None:
        fields = {"container_id": st.container_id, "exit_code": st.exit_code, "health": st.health,
                  "addresses": st.addresses or None, "err": st.err or None,
                  "message": st.message or "started"}
        if st.state == ts.RUNNING:
            self.report(task_id, ts.RUNNING, **fields)
        elif st.state in (ts.COMPLETE, ts.FAILED):
            t = self.assigned.get(task_id)
            if t is not None and t.desired_state not in RUN_DESIRED and st.state == ts.FAILED:
                self.report(task_id, ts.SHUTDOWN, **{**fields, "err": None, "message": "shutdown"})
            else:
                self.report(task_id, st.state, **fields)
        elif st.state in (ts.STARTING, ts.READY):
            self.report(task_id, ts.STARTING, **fields)

    async def _stop(self, t: Task, message: str = "shutdown") -> None:
        st = None
        try:
            await self.executor.stop(t)
            try:
                st = await self.executor.observe(t)
            except (NotFound, EngineError):
                pass
            await self.executor.remove(t)
        except EngineError as e:
            log.warning("stopping %s: %s", t.id, e)
        self.report(t.id, ts.SHUTDOWN, message=message, exit_code=st.exit_code if st else None)

    async def _remove_orphan(self, task_id: str, cid: str) -> None:
        try:
            await self.executor.stop(cid, 10)
            await self.executor.remove(cid)
        except EngineError as e:
            log.warning("removing container of task %s: %s", task_id, e)
        self.executor.forget(task_id)

    # -- what happens to containers ---------------------------------------------------------
    async def event_loop(self) -> None:
        while True:
            try:
                async for ev in self.executor.engine.events(
                        filters={"type": ["container"]},
                        labels={L_MANAGED: "true", L_NODE_ID: self.executor.node_id}):
                    await self.on_event(ev)
            except (EngineError, OSError, asyncio.TimeoutError) as e:
                log.warning("engine events: %s", e)
            except Exception:
                log.exception("engine events stream broke")
            await asyncio.sleep(1)

    async def on_event(self, ev: dict) -> None:
        action = ev.get("Action") or ev.get("status") or ""
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        task_id = attrs.get(L_TASK_ID)
        if not task_id or task_id in self.workers:
            return
        t = self.assigned.get(task_id)
        if t is None:
            return
        if action in ("die", "oom"):
            try:
                st = await self.executor.observe(t)
            except NotFound:
                self.report(task_id, ts.FAILED, err="container removed")
                return
            self.report_status(task_id, st)
        elif action.startswith("health_status"):
            health = action.split(":", 1)[1].strip()
            if health == "unhealthy" and t.desired_state in RUN_DESIRED:
                self._spawn(task_id, self._kill_unhealthy(t))
            elif self.state(t) == ts.RUNNING:
                self.report(task_id, ts.RUNNING, health=health)
        elif action == "destroy" and not ts.is_terminal(self.state(t)):
            self.report(task_id, ts.FAILED, err="container removed", message="container removed behind Shoal's back")

    async def _kill_unhealthy(self, t: Task) -> None:
        try:
            st = await self.executor.kill_unhealthy(t)
            self.report(t.id, ts.FAILED, err=UNHEALTHY_ERR, exit_code=st.exit_code, health="unhealthy",
                        message="unhealthy")
        except NotFound:
            self.report(t.id, ts.FAILED, err=UNHEALTHY_ERR, health="unhealthy")

    async def resync(self) -> None:
        """Catch what events missed: containers gone or exited while we were not looking."""
        present = await self.executor.list_managed()
        for task_id, t in list(self.assigned.items()):
            if task_id in self.workers or self.state(t) not in (ts.RUNNING, ts.STARTING):
                continue
            c = present.get(task_id)
            if c is None:
                self.executor.forget(task_id)
                self.report(task_id, ts.FAILED, err="container removed",
                            message="container removed behind Shoal's back")
            elif c.get("State") != "running":
                try:
                    self.report_status(task_id, await self.executor.observe(c["Id"]))
                except NotFound:
                    pass

    def partition_check(self) -> None:
        """Cut off from every manager for longer than their down judgement: the tasks here have
        been replaced elsewhere; stop those whose service asks for it (no duplicates for them)."""
        silent, down_after = self.cut_off()
        if silent <= down_after:
            self._partition_stopped.clear()
            return
        for t in list(self.assigned.values()):
            if (t.spec.labels.get(STOP_ON_PARTITION) == "true" and t.id not in self._partition_stopped
                    and t.id not in self.workers and self.state(t) in ts.ON_NODE):
                self._partition_stopped.add(t.id)
                log.warning("no manager answered for %.0fs: stopping task %s (%s asks for it)",
                            silent, t.id, STOP_ON_PARTITION)
                self._spawn(t.id, self._stop(t, message=f"stopped: the node lost contact with the managers "
                                                        f"for more than {down_after:.0f}s"))

    async def stop_all(self) -> None:
        self.stopping = True
        for w in list(self.workers.values()):
            w.cancel()
        await asyncio.gather(*self.workers.values(), return_exceptions=True)
