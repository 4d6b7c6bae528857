"""The node agent: runs what the manager assigns to this node, and reports what happened.

It knows the managers only through their network API (mutual TLS with this node's own
certificate), and the engine only through the executor. It is a few components with one
job each: the heartbeat (`heartbeat.py`), status reports (`reporter.py`), the tasks
(`tasks.py`), the certificate (`certs.py`), and here the assignment loop that feeds
them, the node's datapath, log requests and volume actions.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Optional

from pydantic import ValidationError

from shoal.agent import files
from shoal.agent.certs import CertKeeper
from shoal.agent.client import ManagerClient, ManagerUnavailable
from shoal.protocol.endpoint_table import EndpointTable
from shoal.protocol.peer_table import PeerTable
from shoal.agent.engine import Engine, EngineError, NotFound
from shoal.agent.executor import Executor
from shoal.agent.heartbeat import Heartbeater
from shoal.agent.metrics import AgentMetrics
from shoal.agent.networks import NetworkKeeper
from shoal.agent.overlay import Overlay, Segment, network_mtu
from shoal.agent.datapath.view import OverlaySource
from shoal.agent.reporter import StatusReporter
from shoal.agent.tasks import RESYNC_PERIOD, TaskRunner
from shoal.agent.volumes import VolumeActions
from shoal.core import task_states as ts
from shoal.model.objects import NetworkObj, Task

log = logging.getLogger("shoal.agent")


class Agent:
    def __init__(self, node_id: str, client: ManagerClient, *, configs_dir: str, secrets_dir: str,
                 engine: Optional[Engine] = None, addr: str = "", datapath: Any = None,
                 certs: Optional[CertKeeper] = None, overlay: Optional[Overlay] = None,
                 metrics: Optional[AgentMetrics] = None, engine_info: Optional[Awaitable[dict]] = None):
        self.node_id = node_id
        self.client = client
        self.engine = engine or Engine()
        self.executor = Executor(self.engine, node_id, configs_dir=configs_dir, secrets_dir=secrets_dir)
        self.metrics = metrics or AgentMetrics()
        self.engine.on_call = self.metrics.engine_call
        self.executor.on_start = lambda ok: (self.metrics.task_starts if ok else self.metrics.task_start_failures).inc()
        self.networks = NetworkKeeper(self.engine, node_id)
        self.volume_actions = VolumeActions(self.engine, node_id)
        self.datapath = datapath
        self.overlay = overlay
        self.endpoints = EndpointTable()  # the cluster's endpoints, kept from the manager's log
        self.peer_table = PeerTable()  # the overlay's peers, kept from the manager's peer log
        self.reporter = StatusReporter(client)
        self.heartbeat = Heartbeater(client, self.engine, self.networks, self.volume_actions, addr, self._quiet,
                                    engine_info)
        self.runner = TaskRunner(self.executor, self.networks, self.reporter, self._with_node_dns,
                                 lambda: (self.heartbeat.cut_off_for(), self.heartbeat.down_after))
        self.certs = certs
        self._assignment_seen = asyncio.Event()
        self._stop = asyncio.Event()
        self._bg: list[asyncio.Task] = []
        self._problems: dict[str, str] = {}
        self._log_uploads = asyncio.Semaphore(32)  # `service logs` uploads at a time

    @property
    def hostname(self) -> str:
        return self.heartbeat.hostname

    @property
    def assigned(self) -> dict[str, Task]:
        return self.runner.assigned

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        log.info("agent of node %s starting: adopting the containers it finds, then heartbeats to %s",
                 self.node_id, ", ".join(self.client.managers.addresses))
        # Heartbeats need no adoption: they start at once (a joining node is Ready sooner; they
        # too wait for the engine, which describes the node).
        self._bg = [asyncio.create_task(self.heartbeat.run())]
        while True:  # adopt what runs already: containers are not restarted
            try:
                await asyncio.wait_for(self.executor.list_managed(), 30)
                break
            except (EngineError, OSError, asyncio.TimeoutError) as e:
                self._quiet("engine", f"waiting for the Docker Engine ({e or 'no answer in 30s'})")
                await asyncio.sleep(1)
        self._quiet("engine", None)
        loops = [self.runner.event_loop(), self._resync_loop(), self.heartbeat.attached.watch(self.heartbeat.nudge),
                 self._with_managers()]
        if self.certs is not None:
            loops.append(self.certs.run())
        self._bg += [asyncio.create_task(c) for c in loops]
        await self._stop.wait()

    async def _with_managers(self) -> None:
        """The loops that talk to a manager, once a manager answered a heartbeat: the first
        beat is what makes a joining node Ready, and goes first (not beside four new TLS
        connections at once). Containers are watched meanwhile (a partitioned node's tasks
        keep running) and the certificate is renewed whatever happens."""
        await self.heartbeat.registered.wait()
        await asyncio.gather(self._assignment_loop(), self.reporter.run(), self._logs_loop(), self._actions_loop())

    async def stop(self) -> None:
        self._stop.set()
        for t in self._bg:
            t.cancel()
        await self.runner.stop_all()
        await asyncio.gather(*self._bg, return_exceptions=True)
        await self.client.close()
        await self.engine.close()
        if self.datapath is not None:
            await self.datapath.close()

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
                                                      "pp": self.peer_table.position,
                                                      "wait": "25", "rev": "0"}, timeout=40)
            except ManagerUnavailable as e:
                self._quiet("assignments", f"cannot get assignments: {e}")
                backoff = min(5.0, backoff * 2)
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

    def _tasks(self, raw: list) -> tuple[dict[str, Task], set[str]]:
        """The answer's tasks, and the ids of those rejected: one that does not validate is
        rejected alone (reported with why), never the whole assignment."""
        out: dict[str, Task] = {}
        rejected: set[str] = set()
        for item in raw:
            try:
                t = Task.model_validate(item)
            except ValidationError as e:
                tid = item.get("id") if isinstance(item, dict) else None
                why = "; ".join(f"{'.'.join(map(str, er['loc']))}: {er['msg']}"
                                for er in e.errors(include_input=False, include_url=False))[:500]
                log.error("task %s of the assignment is invalid, rejected: %s", tid or "?", why)
                if isinstance(tid, str) and tid:
                    rejected.add(tid)
                    self.reporter.report(tid, ts.REJECTED, err=f"invalid task: {why}", message="rejected")
                continue
            out[t.id] = t
        return out, rejected

    async def apply(self, data: dict) -> None:
        changed, rejected = self._tasks(data.get("tasks") or [])
        if data.get("delta"):
            # only the tasks that changed since the answer we had; the others are as they were
            known = {**self.runner.assigned, **changed}
            ids = [tid for tid in data.get("task_ids", []) if tid not in rejected]
            missing = [tid for tid in ids if tid not in known]
            if missing:  # cannot happen unless answers got mixed up: ask for everything again
                raise RuntimeError(f"a delta answer names tasks this agent never got: {missing[:3]}")
            assigned = {tid: known[tid] for tid in ids}
        else:
            assigned = changed
        nets = [NetworkObj.model_validate(n) for n in data.get("networks", [])]
        self.endpoints.apply(data.get("endpoints") or {})
        await self.networks.ensure(nets)
        self.runner.assign(assigned, files.decode_file_data(data.get("configs", {})),
                           files.decode_file_data(data.get("secrets", {})), set(data.get("history", [])))
        await self.networks.prune(needed={n.spec.name for n in nets})
        self.peer_table.apply(data.get("peers") or {})
        spanning, sources = await self._update_overlay(nets,
                                                       int(data.get("data_path_port") or 4789))
        if self.datapath is not None:
            local = {(t.service_name, net, ip) for t in assigned.values() if t.status.state == ts.RUNNING
                     for net, ip in t.status.addresses.items()}
            try:
                await self.datapath.update(self.endpoints.entries(), self.networks, nets, local, spanning, sources)
            except Exception:
                log.exception("datapath update failed")
        self._assignment_seen.set()

    async def _update_overlay(self, nets: list[NetworkObj], port: int
                              ) -> tuple[set[str], list[OverlaySource]]:
        """Each network's VXLAN device and peers; (the networks whose overlay is up, the source
        address of connections to other nodes on each)."""
        if self.overlay is None or not self.overlay.enabled:
            return set(), []
        segments = []
        for net in nets:
            bridge = self.networks.bridge_of(net.spec.name)
            if not bridge or not net.vni:
                continue
            segments.append(Segment(
                network=net.spec.name, bridge=bridge, vni=net.vni, mtu=network_mtu(net.spec.driver_opts),
                node_address=net.node_addresses.get(self.node_id, ""),
                prefix=int(net.subnet.split("/")[1]) if "/" in net.subnet else 24,
                peers=tuple(self.peer_table.peers(net.spec.name, self.node_id))))
        try:
            await self.overlay.update(segments, port)
        except Exception:
            log.exception("overlay update failed")
        spanning = {s.network for s in segments if self.overlay.is_up(s.network)}
        sources = [OverlaySource(bridge=s.bridge, address=s.node_address, remote=[ip for ip, _ in s.peers])
                   for s in segments if s.network in spanning and s.node_address]
        return spanning, sources

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

    async def _resync_loop(self) -> None:
        passes = 0
        while True:
            await asyncio.sleep(RESYNC_PERIOD)
            passes += 1
            if self.overlay is not None and passes % 6 == 0:
                # Read the kernel back now and then: entries someone removed come back, and
                # devices no network wants any more go.
                try:
                    await self.overlay.check()
                except Exception:
                    log.exception("overlay check failed")
            if self.datapath is not None:
                try:
                    await self.datapath.check()
                except Exception:
                    log.exception("datapath check failed")
            self.runner.partition_check()
            await self.networks.prune()
            try:
                await self.runner.resync()
            except EngineError as e:
                log.warning("resync: %s", e)

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
        """Upload one request's lines; it ends when the containers' logs end or, following, when
        the manager ends the upload (its client went away): the logs are then no longer read."""
        follow = bool(req.get("follow"))

        async def one(c: dict):
            prefix = f"{c['name']}@{self.hostname or self.node_id[:12]}    | "
            try:
                kw: dict = {"follow": follow}
                if req.get("tail") not in (None, "", "all"):
                    kw["tail"] = req["tail"]
                async for item in self.executor.logs(c["container_id"], **kw):
                    line = item[1] if isinstance(item, tuple) else item
                    if isinstance(line, bytes):
                        line = line.decode(errors="replace")
                    yield (prefix + line.rstrip("\n") + "\n").encode()
            except (EngineError, NotFound):
                return

        async def lines():
            if not follow:  # each container's log in turn
                for c in req["containers"]:
                    async for line in one(c):
                        yield line
                return
            # Following, a running container's log never ends: read them all at once.
            queue: asyncio.Queue = asyncio.Queue(maxsize=1024)

            async def pump(c: dict) -> None:
                async for line in one(c):
                    await queue.put(line)
                await queue.put(None)
            pumps = [asyncio.create_task(pump(c)) for c in req["containers"]]
            left = len(pumps)
            try:
                while left:
                    line = await queue.get()
                    if line is None:
                        left -= 1
                    else:
                        yield line
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        body = lines()
        async with self._log_uploads:
            try:
                await self.client.post_stream(f"/v1/agent/logs/{req['id']}", body)
                log.info("log upload %s ended: the manager closed it", req.get("id"))
            except ManagerUnavailable as e:
                log.info("log upload %s ended: %s", req.get("id"), e)
            finally:
                await body.aclose()  # stop following the containers' logs

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
