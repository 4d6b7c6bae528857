"""The containers a user started on this node's attachable networks (`docker run --network`).

Their names must resolve on every node, as Swarm registers them cluster-wide: the node's
engine knows them, the other nodes' engines do not. So the heartbeat reports them among
the node's facts, the manager puts them in the endpoint log, and every node's DNS answers
them. Such a container is told apart from a task by its address alone: the engine gives
it one from this node's block of the network, while tasks get the manager's addresses,
which lie outside every block (docs/datapath.md).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging

from shoal.agent.engine import Engine, EngineError
from shoal.agent.networks import NetworkKeeper

log = logging.getLogger("shoal.agent")

MAX_ATTACHED = 4096  # what a node reports at most (the manager bounds it the same)


class AttachedContainers:
    def __init__(self, engine: Engine, networks: NetworkKeeper):
        self.engine = engine
        self.networks = networks
        self._aliases: dict[tuple[str, str], list[str]] = {}  # (container id, network) -> its aliases there

    async def list(self) -> list[dict]:
        """[{network, name, aliases, ip}] for every such container, sorted (the facts' digest
        is taken over them)."""
        out: list[dict] = []
        seen: set[tuple[str, str]] = set()
        for name, obj in list(self.networks.objs.items()):
            block = self.networks.block_of(obj)
            nid = self.networks.ids.get(name)
            if not block or not nid:
                continue
            try:
                info = await self.engine.networks.inspect(nid)
            except EngineError:
                continue  # gone meanwhile: the next beat sees what is there
            net_block = ipaddress.IPv4Network(block, strict=False)
            for cid, c in (info.get("Containers") or {}).items():
                ip = (c.get("IPv4Address") or "").split("/")[0]
                cname = (c.get("Name") or "").lstrip("/")
                if not ip or not cname:
                    continue
                try:
                    if ipaddress.IPv4Address(ip) not in net_block:
                        continue  # a task's address
                except ValueError:
                    continue
                key = (cid, name)
                seen.add(key)
                aliases = self._aliases.get(key)
                if aliases is None:
                    aliases = await self._aliases_of(cid, name, cname)
                    if aliases is None:
                        continue
                    self._aliases[key] = aliases
                out.append({"network": name, "name": cname, "aliases": aliases, "ip": ip})
        for key in [k for k in self._aliases if k not in seen]:
            del self._aliases[key]
        out.sort(key=lambda a: (a["network"], a["name"], a["ip"]))
        if len(out) > MAX_ATTACHED:
            log.warning("%d containers on attachable networks: only %d are reported", len(out), MAX_ATTACHED)
            out = out[:MAX_ATTACHED]
        return out

    async def watch(self, nudge) -> None:
        """Call `nudge()` when a container joins or leaves one of this node's attachable
        networks, so that the heartbeat tells the cluster at once instead of at its period."""
        while True:
            try:
                async for ev in self.engine.events(filters={"type": ["network"], "event": ["connect", "disconnect"]}):
                    name = ((ev.get("Actor") or {}).get("Attributes") or {}).get("name", "")
                    obj = self.networks.objs.get(name)
                    if obj is not None and self.networks.block_of(obj):
                        nudge()
            except (EngineError, OSError, asyncio.TimeoutError) as e:
                log.debug("engine network events: %s", e)
            except Exception:
                log.exception("engine network events broke")
            await asyncio.sleep(1)

    async def _aliases_of(self, cid: str, network: str, cname: str) -> list[str] | None:
        """The container's other names on the network (`--network-alias`, and the short id
        Docker adds), without its name; None when it is gone."""
        try:
            info = await self.engine.containers.inspect(cid)
        except EngineError:  # NotFound among them: gone meanwhile
            return None
        settings = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
        names = list(settings.get("Aliases") or []) + list(settings.get("DNSNames") or [])
        out: list[str] = []
        for a in names:
            a = str(a).lower()
            if a and a != cname.lower() and a not in out and len(a) <= 255:
                out.append(a)
        return out[:32]
