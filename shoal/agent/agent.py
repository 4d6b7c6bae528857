"""The node agent: runs what the manager assigns to this node, and reports what happened.

It knows the manager only through its network API (mutual TLS with this node's own
certificate), and the engine only through the executor. Its job is to make the
node's containers match the assignment set, and to tell the truth about them:
every state it reports moves the task forward along the agent's column of the
task state table.
"""
from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import time
from typing import Any, Optional

from shoal.agent import files
from shoal.agent.client import ManagerClient, ManagerUnavailable
from shoal.agent.datapath.ports import ports_in_use
from shoal.agent.endpoint_table import EndpointTable
from shoal.agent.engine import Engine, EngineError, NotFound
from shoal.agent.executor import L_MANAGED, L_NODE_ID, L_TASK_ID, UNHEALTHY_ERR, Executor, TaskRejected
from shoal.agent.networks import NetworkKeeper
from shoal.agent.volumes import VolumeActions
from shoal.core import task_states as ts
from shoal.model.objects import NetworkObj, Task

log = logging.getLogger("shoal.agent")

RESYNC_PERIOD = 5.0
RUN_DESIRED = (ts.RUNNING, ts.READY, ts.COMPLETE)  # desired states that mean "run it" (COMPLETE: jobs)


class Agent:
    def __init__(self, node_id: str, client: ManagerClient, *, configs_dir: str, secrets_dir: str,
                 engine: Optional[Engine] = None, addr: str = "", datapath: Any = None):
        self.node_id = node_id
        self.client = client
        self.engine = engine or Engine()
        self.executor = Executor(self.engine, node_id, configs_dir=configs_dir, secrets_dir=secrets_dir)
        self.networks = NetworkKeeper(self.engine, node_id)
        self.volume_actions = VolumeActions(self.engine, node_id)
        self.addr = addr
        self.datapath = datapath
        self.endpoints = EndpointTable()  # the cluster's endpoints, kept from the manager's log
        self.assigned: dict[str, Task] = {}
        # (object name, version) -> data, for the versions this node's tasks pin.
        self.configs: dict[tuple[str, int], bytes] = {}
        self.secrets: dict[tuple[str, int], bytes] = {}
        self.reported: dict[str, str] = {}  # task id -> last state reported
        self.workers: dict[str, asyncio.Task] = {}
        self.outbox: dict[str, dict] = {}
        self._outbox_event = asyncio.Event()
        self._assignment_seen = asyncio.Event()
        self._stop = asyncio.Event()
        self._bg: list[asyncio.Task] = []
        self._problems: dict[str, str] = {}
        self.history: set[str] = set()
        self.hostname = ""  # for `service logs` prefixes (name.slot.id@host), as docker prints them

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        await self.executor.list_managed()  # adopt what runs already: containers are not restarted
        self._bg = [asyncio.create_task(c) for c in (
            self._heartbeat_loop(), self._assignment_loop(), self._event_loop(),
            self._resync_loop(), self._report_loop(), self._logs_loop(),
            self._actions_loop())]
        await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        for t in self._bg + list(self.workers.values()):
            t.cancel()
        await asyncio.gather(*self._bg, *self.workers.values(), return_exceptions=True)
        await self.client.close()
        await self.engine.close()
        if self.datapath is not None:
            await self.datapath.close()

    # ---------------------------------------------------------------- reporting
    def report(self, task_id: str, state: str, **fields: Any) -> None:
        prev = self.reported.get(task_id)
        if prev is not None and ts.RANK[state] < ts.RANK[prev]:
            return
        self.reported[task_id] = state
        u = self.outbox.setdefault(task_id, {"task_id": task_id})
        u.update(state=state, timestamp=time.time(), **{k: v for k, v in fields.items() if v is not None})
        self._outbox_event.set()

    async def _report_loop(self) -> None:
        while True:
            await self._outbox_event.wait()
            await asyncio.sleep(0.02)  # batch
            self._outbox_event.clear()
            batch, self.outbox = list(self.outbox.values()), {}
            try:
                await self.client.call("POST", "/v1/agent/status", json={"updates": batch})
            except ManagerUnavailable as e:
                log.warning("status report failed, will retry: %s", e)
                for u in batch:  # keep the newest news per task
                    self.outbox.setdefault(u["task_id"], u)
                self._outbox_event.set()
                await asyncio.sleep(1)

    # ---------------------------------------------------------------- heartbeat
    async def describe(self) -> dict:
        info = await self.engine.info()
        labels = {}
        for item in info.get("Labels") or []:
            k, _, v = item.partition("=")
            labels[k] = v
        return {
            "hostname": info.get("Name") or socket.gethostname(),
            "os": info.get("OSType") or "linux",
            "arch": info.get("Architecture") or platform.machine(),
            "nano_cpus": int(info.get("NCPU") or os.cpu_count() or 1) * 1_000_000_000,
            "memory_bytes": int(info.get("MemTotal") or 0),
            "engine_version": info.get("ServerVersion") or "",
            "engine_labels": labels,
        }

    async def _volumes(self) -> list[dict]:
        try:
            return await self.volume_actions.list()
        except EngineError:
            return []

    async def _heartbeat_loop(self) -> None:
        desc = None
        period = 5.0
        while True:
            try:
                if desc is None:
                    desc = await self.describe()
                    self.hostname = desc["hostname"]
                resp = await self.client.call("POST", "/v1/agent/heartbeat", json={
                    "description": desc, "addr": self.addr, "volumes": await self._volumes(),
                    "engine_subnets": await self.networks.foreign_subnets(),
                    "ports_in_use": await asyncio.to_thread(ports_in_use)}, timeout=10)
                period = float(resp.get("heartbeat_period", 5.0))
                self._quiet("heartbeat", None)
            except (ManagerUnavailable, EngineError, OSError) as e:
                self._quiet("heartbeat", f"heartbeat failed: {e}")
                period = 2.0
            await asyncio.sleep(period)

    def _quiet(self, what: str, problem: Optional[str]) -> None:
        """Log a recurring problem once when it starts and once when it ends, not on every retry."""
        known = self._problems.get(what)
        if problem and problem != known:
            log.warning("%s (retrying quietly)", problem)
        elif not problem and known:
            log.info("%s: working again", what)
        if problem:
            self._problems[what] = problem
        else:
            self._problems.pop(what, None)

    # -------------------------------------------------------------- assignments
    async def _assignment_loop(self) -> None:
        digest = ""
        backoff = 0.5
        while True:
            try:
                data = await self.client.call("GET", "/v1/agent/assignments",
                                              params={"digest": digest, "ep": self.endpoints.position,
                                                      "wait": "25", "rev": "0"}, timeout=40)
            except ManagerUnavailable as e:
                self._quiet("assignments", f"cannot get assignments: {e}")
                backoff = min(10.0, backoff * 2)
                await asyncio.sleep(backoff)
                continue
            self._quiet("assignments", None)
            backoff = 0.5
            digest = data.get("digest", "")
            try:
                await self.apply(data)
            except Exception:
                log.exception("applying assignments failed")
                digest = ""  # the next answer is then whole, not a delta on what failed
                await asyncio.sleep(1)

    async def apply(self, data: dict) -> None:
        changed = [Task.model_validate(t) for t in data["tasks"]]
        if data.get("delta"):
            # only the tasks that changed since the answer we had; the others are as they were
            known = {**self.assigned, **{t.id: t for t in changed}}
            missing = [tid for tid in data.get("task_ids", []) if tid not in known]
            if missing:  # cannot happen unless answers got mixed up: ask for everything again
                raise RuntimeError(f"a delta answer names tasks this agent never got: {missing[:3]}")
            self.assigned = {tid: known[tid] for tid in data.get("task_ids", [])}
        else:
            self.assigned = {t.id: t for t in changed}
        tasks = list(self.assigned.values())
        self.configs = files.decode_file_data(data.get("configs", {}))
        self.secrets = files.decode_file_data(data.get("secrets", {}))
        nets = [NetworkObj.model_validate(n) for n in data.get("networks", [])]
        self.endpoints.apply(data.get("endpoints") or {})
        await self.networks.ensure(nets)
        for t in tasks:
            self._drive(t)
        # Containers of tasks the manager no longer assigns here: stop and remove them.
        self.history = set(data.get("history", []))
        for task_id, cid in list(self.executor._containers.items()):
            if task_id not in self.assigned and task_id not in self.workers and task_id not in self.history:
                self._spawn(task_id, self._remove_orphan(task_id, cid))
        await self.networks.prune(needed={n.spec.name for n in nets})
        if self.datapath is not None:
            try:
                await self.datapath.update(self.endpoints.entries(), self.networks, nets)
            except Exception:
                log.exception("datapath update failed")
        self._assignment_seen.set()

    def _spawn(self, task_id: str, coro) -> None:
        w = asyncio.create_task(coro)
        self.workers[task_id] = w

        def done(fut: asyncio.Task) -> None:
            if self.workers.get(task_id) is fut:
                del self.workers[task_id]
            if not fut.cancelled() and fut.exception():
                log.error("worker for task %s failed: %r", task_id, fut.exception())
            t = self.assigned.get(task_id)
            if t is not None and not self._stop.is_set():
                self._drive(t)  # the desired state may have changed while it worked

        w.add_done_callback(done)

    def _state(self, t: Task) -> str:
        mine = self.reported.get(t.id)
        if mine is not None and ts.RANK[mine] > ts.RANK[t.status.state]:
            return mine
        return t.status.state

    def _drive(self, t: Task) -> None:
        if t.id in self.workers:
            return
        state = self._state(t)
        if ts.is_terminal(state):
            # A task that ended on its own keeps its stopped container while it is in the slot's
            # history (the manager lists those); the rest are removed.
            if self.executor.container_id(t.id) and state not in (ts.COMPLETE, ts.FAILED):
                self._spawn(t.id, self._remove_orphan(t.id, self.executor.container_id(t.id)))
            return
        if t.desired_state in RUN_DESIRED:
            if state in (ts.ASSIGNED, ts.ACCEPTED, ts.PREPARING, ts.READY, ts.STARTING):
                self._spawn(t.id, self._start_task(t))
            elif state == ts.RUNNING and not self.executor.container_id(t.id):
                self.report(t.id, ts.FAILED, err="container removed", message="container vanished")
        else:
            if state in ts.ON_NODE or state in (ts.NEW, ts.PENDING):
                self._spawn(t.id, self._stop_task(t))

    async def _start_task(self, t: Task) -> None:
        cid = self.executor.container_id(t.id)
        if cid:  # adopted after a restart, or created before a crash: observe, don't restart
            try:
                st = await self.executor.observe(cid)
            except NotFound:
                st = None
            if st is not None and st.state in (ts.RUNNING, ts.COMPLETE, ts.FAILED):
                self._report_status(t.id, st)
                return
        delay = t.not_before - time.time()
        if delay > 0:  # a restart: Swarm's restart delay passes before anything is prepared
            self.report(t.id, ts.ACCEPTED, message=f"restart delay {delay:.1f}s")
            await asyncio.sleep(delay)
        self.report(t.id, ts.ACCEPTED, message="accepted")
        try:
            nets = self.networks.ids_for(t)
            t = self._with_node_dns(t)
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
        self._report_status(t.id, st)

    def _with_node_dns(self, t: Task) -> Task:
        """Point the container's resolver at the node's DNS server on its first network's gateway.

        The engine's resolver (127.0.0.11) still answers container names and forwards
        everything else there, so service names, `tasks.` names and the outside world resolve.
        """
        if self.datapath is None or not t.spec.networks:
            return t
        obj = self.networks.objs.get(t.spec.networks[0].network)
        if obj is None or not obj.gateway or obj.gateway in t.spec.container.dns:
            return t
        c = t.spec.container.model_copy(update={"dns": [obj.gateway] + t.spec.container.dns})
        return t.model_copy(update={"spec": t.spec.model_copy(update={"container": c})})

    def _report_status(self, task_id: str, st) -> None:
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

    async def _stop_task(self, t: Task) -> None:
        try:
            await self.executor.stop(t)
            st = None
            try:
                st = await self.executor.observe(t)
            except (NotFound, EngineError):
                pass
            await self.executor.remove(t)
        except EngineError as e:
            log.warning("stopping %s: %s", t.id, e)
            st = None
        exit_code = st.exit_code if st else None
        self.report(t.id, ts.SHUTDOWN, message="shutdown", exit_code=exit_code)

    async def _remove_orphan(self, task_id: str, cid: str) -> None:
        try:
            await self.executor.stop(cid, 10)
            await self.executor.remove(cid)
        except EngineError as e:
            log.warning("removing container of task %s: %s", task_id, e)
        self.executor._containers.pop(task_id, None)

    # ------------------------------------------------------------------ events
    async def _event_loop(self) -> None:
        while True:
            try:
                async for ev in self.engine.events(
                        filters={"type": ["container"]},
                        labels={L_MANAGED: "true", L_NODE_ID: self.node_id}):
                    await self._on_event(ev)
            except (EngineError, OSError, asyncio.TimeoutError) as e:
                log.warning("engine events: %s", e)
            except Exception:
                log.exception("engine events stream broke")
            await asyncio.sleep(1)

    async def _on_event(self, ev: dict) -> None:
        action = ev.get("Action") or ev.get("status") or ""
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        task_id = attrs.get(L_TASK_ID)
        if not task_id or task_id in self.workers:
            return
        t = self.assigned.get(task_id)
        if t is None:
            return
        if action == "die" or action == "oom":
            try:
                st = await self.executor.observe(task_id if False else t)
            except NotFound:
                self.report(task_id, ts.FAILED, err="container removed")
                return
            self._report_status(task_id, st)
        elif action.startswith("health_status"):
            health = action.split(":", 1)[1].strip()
            if health == "unhealthy" and t.desired_state in RUN_DESIRED:
                self._spawn(task_id, self._kill_unhealthy(t))
            elif self._state(t) == ts.RUNNING:
                self.report(task_id, ts.RUNNING, health=health)
        elif action == "destroy" and not ts.is_terminal(self._state(t)):
            self.report(task_id, ts.FAILED, err="container removed", message="container removed behind Shoal's back")

    async def _kill_unhealthy(self, t: Task) -> None:
        try:
            st = await self.executor.kill_unhealthy(t)
            self.report(t.id, ts.FAILED, err=UNHEALTHY_ERR, exit_code=st.exit_code, health="unhealthy",
                        message="unhealthy")
        except NotFound:
            self.report(t.id, ts.FAILED, err=UNHEALTHY_ERR, health="unhealthy")

    async def _resync_loop(self) -> None:
        """Catch what events missed: containers gone or exited while we were not looking."""
        while True:
            await asyncio.sleep(RESYNC_PERIOD)
            if self.datapath is not None:
                try:
                    await self.datapath.check()
                except Exception:
                    log.exception("datapath check failed")
            try:
                present = await self.executor.list_managed()
            except EngineError as e:
                log.warning("resync: %s", e)
                continue
            for task_id, t in list(self.assigned.items()):
                if task_id in self.workers or self._state(t) not in (ts.RUNNING, ts.STARTING):
                    continue
                c = present.get(task_id)
                if c is None:
                    self.executor._containers.pop(task_id, None)
                    self.report(task_id, ts.FAILED, err="container removed",
                                message="container removed behind Shoal's back")
                elif c.get("State") != "running":
                    try:
                        self._report_status(task_id, await self.executor.observe(c["Id"]))
                    except NotFound:
                        pass

    # -------------------------------------------------------------------- logs
    async def _logs_loop(self) -> None:
        while True:
            try:
                reqs = await self.client.call("GET", "/v1/agent/logs", params={"wait": "25"}, timeout=40)
            except ManagerUnavailable:
                await asyncio.sleep(2)
                continue
            for r in reqs or []:
                asyncio.create_task(self._send_logs(r))

    async def _send_logs(self, req: dict) -> None:
        async def lines():
            for c in req["containers"]:
                prefix = f"{c['name']}@{self.hostname or self.node_id[:12]}    | "
                try:
                    kw: dict = {"follow": bool(req.get("follow"))}
                    if req.get("tail") not in (None, "", "all"):
                        kw["tail"] = req["tail"]
                    async for item in self.executor.logs(c["container_id"], **kw):
                        line = item[1] if isinstance(item, tuple) else item
                        if isinstance(line, bytes):
                            line = line.decode(errors="replace")
                        yield (prefix + line.rstrip("\n") + "\n").encode()
                except (EngineError, NotFound):
                    continue
        try:
            await self.client.post_stream(f"/v1/agent/logs/{req['id']}", lines())
        except ManagerUnavailable as e:
            log.warning("sending logs: %s", e)

    # ----------------------------------------------------------------- actions
    async def _actions_loop(self) -> None:
        """Run what the manager asks of this node's engine (volume inspect/rm/prune) and answer."""
        while True:
            try:
                reqs = await self.client.call("GET", "/v1/agent/actions", params={"wait": "25"}, timeout=40)
            except ManagerUnavailable:
                await asyncio.sleep(2)
                continue
            for r in reqs or []:
                asyncio.create_task(self._run_action(r))

    async def _run_action(self, req: dict) -> None:
        try:
            answer = await self.volume_actions.handle(req.get("kind", ""), req.get("args") or {})
        except Exception as e:  # never leave the manager waiting for an answer that will not come
            log.exception("action %s failed", req.get("kind"))
            answer = {"ok": False, "error": f"agent error: {e}", "status": 500}
        try:
            await self.client.call("POST", f"/v1/agent/actions/{req['id']}", json=answer, timeout=15)
        except ManagerUnavailable as e:
            log.warning("answering action %s: %s", req.get("kind"), e)
