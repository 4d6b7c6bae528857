"""Turns the manager's endpoint list into this node's datapath (nftables) and DNS answers.

The manager tells every agent, for each service: its VIPs per network, its published
ports and its running, healthy replicas' addresses. This module builds the pure
views the datapath package renders, and applies them only when they change.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from shoal.agent.datapath import (Backend, DatapathView, DnsNetwork, DnsServer, DnsService, DnsView,
                                  IngressPort, Vip, apply_async)
from shoal.agent.datapath.view import AttachedDns, OverlaySource
from shoal.model.objects import NetworkObj
from shoal.paths import Layout

if TYPE_CHECKING:
    from shoal.agent.networks import NetworkKeeper

log = logging.getLogger("shoal.agent.netplane")


def local_only(endpoints: list[dict], local: set[tuple[str, str, str]],
               spanning: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    """The endpoints without the replicas this node cannot reach.

    On a network whose overlay is up on this node (`spanning`) every replica is reachable.
    Elsewhere (no overlay: a node without an address other nodes reach, or a network stored
    before the overlay) the network is a bridge of this node alone: another node's replica is
    unreachable from here, and its address may even be a different container's on this
    node. There this node's mesh, VIPs and DNS answer with its own replicas only (`local`:
    (service, network, address) of its running tasks)."""
    out = []
    for ep in endpoints:
        name = ep["name"]
        backends = []
        for b in ep["backends"]:
            addrs = {net: ip for net, ip in (b.get("addresses") or {}).items()
                     if net in spanning or (name, net, ip) in local}
            if addrs:
                backends.append({**b, "addresses": addrs})
        out.append({**ep, "backends": backends})
    return out


def build_views(endpoints: list[dict], keeper: "NetworkKeeper",
                overlay: list[OverlaySource] | None = None,
                local: set[tuple[str, str, str]] | None = None) -> tuple[DatapathView, DnsView]:
    """`local`: this node's running replicas; a service whose traffic policy is `local`
    publishes its ports to those alone (None: every replica counts as local)."""
    ingress: list[IngressPort] = []
    vips: list[Vip] = []
    dns_nets: dict[str, DnsNetwork] = {}
    for name, obj in keeper.objs.items():
        if name in keeper.ids:
            dns_nets[name] = DnsNetwork(name=name, gateway=obj.gateway, services=[])
    for ep in endpoints:
        backends = ep["backends"]
        for p in ep["ports"]:
            if p.get("mode", "ingress") != "ingress" or not p.get("published"):
                continue
            addrs = []
            only_here = ep.get("traffic_policy") == "local" and local is not None
            for b in backends:
                first = next(iter((b.get("addresses") or {}).items()), None)
                if first and (not only_here or (ep["name"], first[0], first[1]) in local):
                    addrs.append(Backend(ip=first[1], port=p["target"]))
            ingress.append(IngressPort(protocol=p["protocol"], published=p["published"], backends=addrs,
                                       service=ep["name"]))
        for net in ep["networks"]:
            if net not in dns_nets:
                continue
            ips = [b["addresses"][net] for b in backends if net in (b.get("addresses") or {})]
            vip = ep["virtual_ips"].get(net) if ep["endpoint_mode"] == "vip" else None
            if vip:
                bridge = keeper.bridge_of(net)
                obj = keeper.objs[net]
                if bridge:
                    vips.append(Vip(vip=vip, bridge=bridge, subnet=obj.subnet, backends=ips, service=ep["name"]))
            aliases = [a for a in (ep.get("aliases") or {}).get(net, []) if a != ep["short_name"]]
            dns_nets[net].services.append(DnsService(
                name=ep["name"], stack=ep.get("stack"), aliases=aliases, endpoint_mode=ep["endpoint_mode"],
                vip=vip, tasks=ips))
    bridges = sorted(b for b in (keeper.bridge_of(n) for n in keeper.ids) if b)
    attached = [AttachedDns(bridge=bridge, block=block, gateway=obj.gateway)
                for name, obj in keeper.objs.items()
                if (block := keeper.block_of(obj)) and obj.gateway and (bridge := keeper.bridge_of(name))]
    return (DatapathView(ingress=ingress, vips=vips, host_ports=[], bridges=bridges, overlay=overlay or [],
                         attached_dns=attached),
            DnsView(networks=list(dns_nets.values())))


class NetPlane:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.dns = DnsServer(DnsView())
        self._last: str | None = None
        self._view: DatapathView | None = None

    async def update(self, endpoints: list[dict], keeper: "NetworkKeeper", nets: list[NetworkObj],
                     local: set[tuple[str, str, str]] | None = None,
                     spanning: frozenset[str] | set[str] = frozenset(),
                     overlay: list[OverlaySource] | None = None) -> None:
        """`local`: this node's running replicas, `spanning`: the networks whose overlay is up
        (see local_only); `local` None: every replica is reachable. `overlay`: the source
        address of connections to other nodes, per network."""
        dp, dns = build_views(endpoints if local is None else local_only(endpoints, local, spanning), keeper,
                              overlay, local)
        key = dp.model_dump_json()
        if key != self._last:
            await apply_async(dp)
            self._last, self._view = key, dp
        await self.dns.update(dns)

    async def check(self) -> None:
        """Re-assert the rules if something removed Shoal's table behind its back (e.g. a flush)."""
        if self._view is None:
            return
        proc = await asyncio.create_subprocess_exec("nft", "list", "table", "ip", "shoal",
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        if await proc.wait() != 0:
            log.warning("Shoal's nftables table is gone: restoring it")
            await apply_async(self._view)

    async def close(self) -> None:
        # The kernel rules stay: traffic keeps flowing while the daemon restarts.
        await self.dns.stop()
