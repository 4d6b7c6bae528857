"""The agent's heartbeat: tells the manager the node lives, and what it is.

Each beat carries the node's description (from its engine) and, when they changed since
the manager last acknowledged them, its facts: engine subnets, ports other processes hold,
volumes, the containers users started on attachable networks (see attached.py; one
joining or leaving makes the agent beat at once). The answer sets the period, names the
managers (the agent fails over between them) and the certificate lifetime. The agent
remembers when it last reached a manager: cut off for longer than the down judgement, it
knows it has been replaced elsewhere.
"""
from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import time
from typing import Any, Awaitable, Callable, Optional

from shoal.agent.attached import AttachedContainers
from shoal.agent.client import ManagerClient, ManagerUnavailable
from shoal.agent.datapath.ports import ports_in_use
from shoal.agent.engine import Engine, EngineError
from shoal.agent.networks import NetworkKeeper
from shoal.agent.volumes import VolumeActions
from shoal.limits import DEFAULT_HEARTBEAT, HEARTBEAT_GRACE
from shoal.protocol import facts_digest

log = logging.getLogger("shoal.agent")

NUDGE_GAP = 0.1  # seconds a nudged beat waits for more changes


class Heartbeater:
    def __init__(self, client: ManagerClient, engine: Engine, networks: NetworkKeeper, volumes: VolumeActions,
                 addr: str, quiet: Callable[[str, Optional[str]], None],
                 engine_info: Optional[Awaitable[dict]] = None):
        self.client = client
        self.engine = engine
        self.networks = networks
        self.volumes = volumes
        self.attached = AttachedContainers(engine, networks)
        self.addr = addr
        self.quiet = quiet
        self.hostname = ""
        self.period = DEFAULT_HEARTBEAT
        self.down_after = DEFAULT_HEARTBEAT * HEARTBEAT_GRACE
        self.cert_expiry: Optional[float] = None
        self.role: Optional[str] = None
        self.last_contact = time.monotonic()  # when a manager last answered a heartbeat
        self.registered = asyncio.Event()  # set by the first heartbeat a manager accepted
        self._acked = ""  # the facts digest the manager last answered with
        self._nudged = asyncio.Event()  # beat now (facts changed), not at the period
        # the engine's answer asked while the node joined (the first beat goes out sooner)
        self._engine_info = engine_info

    async def describe(self) -> dict:
        info = None
        if self._engine_info is not None:
            asked, self._engine_info = self._engine_info, None
            try:
                info = await asked
            except (EngineError, OSError):
                pass  # asked again below
        if info is None:
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

    async def facts(self) -> dict:
        async def volumes() -> list:
            try:
                return await self.volumes.list()
            except EngineError:
                return []

        # asked together: each is an engine call or a read of the kernel's tables
        vols, subnets, ports, attached = await asyncio.gather(
            volumes(), self.networks.foreign_subnets(), asyncio.to_thread(ports_in_use), self.attached.list())
        out = {"engine_subnets": subnets, "ports_in_use": ports, "volumes": vols}
        if attached:  # (a manager older than them refuses the key)
            out["attached"] = attached
        return out

    def nudge(self) -> None:
        """Beat now: a fact changed that other nodes should hear of soon (a user's container
        joined or left an attachable network)."""
        self._nudged.set()

    def cut_off_for(self) -> float:
        """Seconds since a manager last answered."""
        return time.monotonic() - self.last_contact

    async def beat(self, desc: dict, facts: Optional[dict] = None) -> dict:
        if facts is None:
            facts = await self.facts()
        body: dict[str, Any] = {"description": desc, "addr": self.addr}
        if facts_digest(facts["engine_subnets"], facts["ports_in_use"], facts["volumes"],
                        facts.get("attached")) != self._acked:
            body["facts"] = facts
        resp = await self.client.call("POST", "/v1/agent/heartbeat", json=body, timeout=max(5.0, self.period * 2))
        self._acked = resp.get("facts_digest", "")
        self.period = float(resp.get("heartbeat_period") or DEFAULT_HEARTBEAT)
        self.down_after = float(resp.get("down_after") or self.period * HEARTBEAT_GRACE)
        self.cert_expiry = resp.get("cert_expiry")
        self.role = resp.get("role")  # what the cluster says this node is (the daemon follows it)
        if resp.get("managers"):
            self.client.managers.update(list(resp["managers"]))
        self.last_contact = time.monotonic()
        self.registered.set()
        return resp

    async def run(self) -> None:
        desc = None
        while True:
            try:
                facts = None
                if desc is None:  # the first beat (a joining node is Ready once it is answered)
                    desc, facts = await asyncio.gather(self.describe(), self.facts())
                    self.hostname = desc["hostname"]
                    log.info("node %s: heartbeats to %s", self.hostname, self.client.managers.current())
                await self.beat(desc, facts)
                self.quiet("heartbeat", None)
                delay = self.period
            except (ManagerUnavailable, EngineError, OSError) as e:
                self.quiet("heartbeat", f"heartbeat failed: {e}")
                delay = min(self.period, 1.0)  # come back quickly: a blip must not cost the node
            try:
                await asyncio.wait_for(self._nudged.wait(), delay)
                await asyncio.sleep(NUDGE_GAP)  # (a burst of `docker run`s: one beat)
            except asyncio.TimeoutError:
                pass
            self._nudged.clear()
