"""Makes the manager's networks exist on this node's engine, and removes them when unused.

Each Shoal network is a Docker bridge with the subnet the manager allocated (so VIPs
and addresses agree cluster-wide), labelled so Shoal only ever touches its own. On an
attachable network the engine's IPAM may give out only this node's block (its `IPRange`),
so `docker run --network NAME` takes an address no task and no other node uses; on the
others nothing (the gateway alone), so the engine refuses `docker run --network NAME`.
"""
from __future__ import annotations

import logging
from typing import Optional

from shoal.agent.engine import Engine, EngineError, NotFound
from shoal.agent.overlay import DEFAULT_MTU, MTU_OPT
from shoal.model.objects import NetworkObj, Task

log = logging.getLogger("shoal.agent.networks")

L_MANAGED = "shoal.managed"
L_NETWORK_ID = "shoal.network.id"
L_NODE_ID = "shoal.node.id"
STACK_LABEL = "com.docker.stack.namespace"


class NetworkConflict(Exception):
    pass


class NetworkKeeper:
    def __init__(self, engine: Engine, node_id: str):
        self.engine = engine
        self.node_id = node_id
        self.ids: dict[str, str] = {}  # network name -> engine network id
        self.objs: dict[str, NetworkObj] = {}
        self.errors: dict[str, str] = {}
        self.needed: Optional[set[str]] = None  # the networks of the last assignment
        self.ranges: dict[str, str] = {}  # network name -> the IPRange it was made with ("" none)
        self._kept: set[str] = set()  # networks said (once) to be kept as they were while in use

    def block_of(self, net: NetworkObj) -> str:
        """This node's block of an attachable network's addresses ("" when none)."""
        return net.attach_ranges.get(self.node_id, "") if net.spec.attachable else ""

    def engine_range(self, net: NetworkObj) -> str:
        """What this node's engine may give out on `net` itself (its `IPRange`): this node's
        block of an attachable network; on any other network (or before the block comes) the
        gateway alone, which the engine holds already, so that it gives out nothing and
        refuses `docker run --network` ("no available IPv4 addresses"), as Swarm refuses a
        network that is not attachable. Tasks get the manager's addresses, which the engine
        takes outside the range."""
        return self.block_of(net) or (f"{net.gateway}/32" if net.gateway else "")

    async def ensure(self, nets: list[NetworkObj]) -> None:
        if self.needed is not None:  # a prune meanwhile must not take what is being made
            self.needed = self.needed | {net.spec.name for net in nets}
        for net in nets:
            self.objs[net.spec.name] = net
            made = self.ranges.get(net.spec.name)
            if net.spec.name in self.ids and made in (self.engine_range(net), "-"):
                continue  # ("-": kept as it was while in use; the periodic prune tries again)
            try:
                self.ids[net.spec.name] = await self._ensure_one(net)
                self.errors.pop(net.spec.name, None)
            except (EngineError, NetworkConflict) as e:
                self.errors[net.spec.name] = str(e)
                log.error("network %s: %s", net.spec.name, e)

    async def _ensure_one(self, net: NetworkObj) -> str:
        name = net.spec.name
        try:
            info = await self.engine.networks.inspect(name)
            labels = info.get("Labels") or {}
            if labels.get(L_MANAGED) != "true":
                raise NetworkConflict(f"a network named {name} exists on this node's engine and is not "
                                      f"Shoal's; rename or remove it")
            configs = (info.get("IPAM") or {}).get("Config") or []
            subnets = [c.get("Subnet") for c in configs]
            ranges = [c.get("IPRange") or "" for c in configs]
            same = labels.get(L_NETWORK_ID) == net.id and net.subnet in subnets
            if same and self.engine_range(net) in ranges:
                self.ranges[name] = self.engine_range(net)
                return info["Id"]
            # A leftover of an earlier network of the same name, or this one made before the
            # node had its block (or by an older Shoal, open to the engine's own IPAM): replaced
            # if unused. While containers use it, it stays as it is until they are gone.
            try:
                await self.engine.networks.remove(info["Id"])
            except EngineError:
                if not same:
                    raise
                if name not in self._kept:
                    self._kept.add(name)
                    log.warning("network %s: kept as it is (its engine's address range is not Shoal's "
                                "yet) while containers use it", name)
                self.ranges[name] = "-"  # not applied: the periodic prune tries again
                return info["Id"]
        except NotFound:
            pass
        labels = {**net.spec.labels, L_MANAGED: "true", L_NETWORK_ID: net.id, L_NODE_ID: self.node_id}
        if net.spec.stack:
            labels[STACK_LABEL] = net.spec.stack
        opts = {k: v for k, v in net.spec.driver_opts.items() if k.startswith("com.docker.network.")}
        # Room for the overlay's VXLAN header on a 1500-byte underlay (the containers' MTU).
        opts.setdefault(MTU_OPT, str(DEFAULT_MTU))
        # Not "Attachable": a local bridge takes any container without it, and an engine in
        # Swarm mode treats attachable networks as its own: it tries to remove them on `swarm
        # leave`, and with Swarm and Shoal on one engine (the benchmarks) networks of ours
        # were left with "active endpoints" and no container, refused by `network rm` until
        # the engine restarted ("Fixing inconsistent endpoint_cnt" in its log).
        self._kept.discard(name)
        nid = await self.engine.networks.create(
            name, "bridge", opts, subnets=[net.subnet], gateway=net.gateway, ip_range=self.engine_range(net) or None,
            internal=net.spec.internal, labels=labels)
        self.ranges[name] = self.engine_range(net)
        return nid

    async def foreign_subnets(self) -> list[str]:
        """Subnets the engine uses for networks that are not this node's Shoal networks.

        The manager allocates around them, so a Shoal network never collides with the
        engine's own, a user's, or another cluster's networks on this node.
        """
        out = []
        try:
            nets = await self.engine.networks.list()
        except EngineError:
            return out
        for n in nets:
            labels = n.get("Labels") or {}
            if labels.get(L_MANAGED) == "true" and labels.get(L_NODE_ID) == self.node_id:
                continue
            for c in ((n.get("IPAM") or {}).get("Config") or []):
                if c.get("Subnet") and ":" not in c["Subnet"]:
                    out.append(c["Subnet"])
        return sorted(set(out))

    def ids_for(self, task: Task) -> dict[str, str]:
        out = {}
        for att in task.spec.networks:
            nid = self.ids.get(att.network)
            if nid is None:
                from shoal.agent.executor import TaskRejected
                raise TaskRejected(self.errors.get(att.network) or f"network {att.network} is not available on this node")
            out[att.network] = nid
        return out

    def bridge_of(self, name: str) -> Optional[str]:
        nid = self.ids.get(name)
        return f"br-{nid[:12]}" if nid else None

    async def prune(self, needed: Optional[set[str]] = None) -> None:
        """Remove Shoal's networks no assignment needs, once no container uses them. Called
        with each assignment, and again now and then with the last one's networks: the last
        container of a network is often removed after the assignment that dropped it."""
        if needed is not None:
            self.needed = needed
        else:  # the periodic pass: networks kept as they were are tried again
            for name in [n for n, r in self.ranges.items() if r == "-"]:
                del self.ranges[name]
            if self.needed is None:
                return  # no assignment yet: nothing is known to be unneeded
        needed = self.needed
        try:
            nets = await self.engine.networks.list(labels={L_MANAGED: "true", L_NODE_ID: self.node_id})
        except EngineError:
            return
        for n in nets:
            if n["Name"] in needed or (n.get("Labels") or {}).get("shoal.test"):
                continue
            try:
                info = await self.engine.networks.inspect(n["Id"])
                if info.get("Containers"):
                    continue
                await self.engine.networks.remove(n["Id"])
                self.ids.pop(n["Name"], None)
                self.objs.pop(n["Name"], None)
                self.ranges.pop(n["Name"], None)
            except EngineError:
                pass
