"""What the node datapath must implement, as plain data (no IO).

The agent builds a :class:`DatapathView` from the tasks running on this node and the
services' virtual IPs / published ports, and hands it to :func:`shoal.agent.datapath.kernel.apply`.
The service-name DNS gets a :class:`DnsView` (see ``dns.py``) built from the same data.

Address plan (one Docker bridge per Shoal network, network index ``n`` in 0..255):

* container subnet ``10.210.n.0/24``, gateway ``10.210.n.1`` (the bridge's address, also
  where the node's DNS server listens for that network), containers get ``.2``-``.254``;
* virtual IPs ``10.211.n.0/24`` (``.2``-``.254``) - *off-link*: no interface on the node
  or in a container carries that subnet, so a container sends VIP traffic to its
  default gateway (the bridge) where the node's ``prerouting`` hook DNATs it.

See docs/datapath.md.
"""
from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

Protocol = Literal["tcp", "udp", "sctp"]

CONTAINER_SUPERNET = "10.210.0.0/16"
VIP_SUPERNET = "10.211.0.0/16"


class AddressPlan(BaseModel):
    """Addresses of Shoal network number ``index`` (see module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    index: int
    subnet: str
    gateway: str
    ip_range: str
    vip_subnet: str

    @classmethod
    def for_index(cls, index: int) -> "AddressPlan":
        if not 0 <= index <= 255:
            raise ValueError(f"network index {index} out of range 0..255")
        return cls(
            index=index,
            subnet=f"10.210.{index}.0/24",
            gateway=f"10.210.{index}.1",
            ip_range=f"10.210.{index}.0/24",
            vip_subnet=f"10.211.{index}.0/24",
        )

    def vip(self, host: int) -> str:
        """The ``host``-th VIP of this network (2..254)."""
        if not 2 <= host <= 254:
            raise ValueError("VIP host number must be in 2..254")
        return f"10.211.{self.index}.{host}"


def _ip(v: str) -> str:
    return str(ipaddress.IPv4Address(v))


def _iface(v: str) -> str:
    """A Linux interface name, safe to put in an nftables ruleset."""
    if not v or len(v) > 15 or any(c in v for c in ' "\\/\n\t'):
        raise ValueError(f"bad interface name {v!r}")
    return v


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(_Plain):
    """One running (and healthy) replica behind a published port."""

    ip: str
    port: int = Field(ge=1, le=65535)

    @field_validator("ip")
    @classmethod
    def _check_ip(cls, v: str) -> str:
        return _ip(v)


class IngressPort(_Plain):
    """A port published in ingress mode: answers on every local address of the node
    (including 127.0.0.1) and balances new connections across ``backends`` (the running,
    healthy replicas; on this single-node phase all of them sit on this node's bridges)."""

    protocol: Protocol = "tcp"
    published: int = Field(ge=1, le=65535)
    backends: list[Backend] = Field(default_factory=list)
    service: str = ""  # for comments / debugging only


class HostPort(_Plain):
    """A port published in host mode by a task running on this node."""

    protocol: Protocol = "tcp"
    published: int = Field(ge=1, le=65535)
    ip: str
    target: int = Field(ge=1, le=65535)
    service: str = ""

    @field_validator("ip")
    @classmethod
    def _check_ip(cls, v: str) -> str:
        return _ip(v)


class Vip(_Plain):
    """A service's virtual IP on one network. Traffic to it from that network's bridge (or
    from the node itself) is DNATed to one of ``backends``, keeping the destination port."""

    vip: str
    bridge: str  # Linux interface of the network's bridge, e.g. "br-1a2b3c4d5e6f"
    subnet: str  # the network's container subnet, e.g. "10.210.3.0/24"
    backends: list[str] = Field(default_factory=list)
    service: str = ""

    @field_validator("vip")
    @classmethod
    def _check_vip(cls, v: str) -> str:
        return _ip(v)

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, v: list[str]) -> list[str]:
        return [_ip(x) for x in v]

    @field_validator("subnet")
    @classmethod
    def _check_subnet(cls, v: str) -> str:
        return str(ipaddress.IPv4Network(v, strict=False))

    @field_validator("bridge")
    @classmethod
    def _check_bridge(cls, v: str) -> str:
        return _iface(v)


class OverlaySource(_Plain):
    """A network that spans nodes, seen from this one: connections the routing mesh (or a
    process of this node) sends over it to an endpoint on another node leave with this
    node's own address on the network, so the answer comes back here (every node's bridge
    has the same gateway address)."""

    bridge: str
    address: str  # this node's address on the network
    remote: list[str] = Field(default_factory=list)  # endpoints on other nodes

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        return _ip(v)

    @field_validator("remote")
    @classmethod
    def _check_remote(cls, v: list[str]) -> list[str]:
        return [_ip(x) for x in v]

    @field_validator("bridge")
    @classmethod
    def _check_bridge(cls, v: str) -> str:
        return _iface(v)


class AttachedDns(_Plain):
    """Containers a user started on an attachable network (`docker run --network`) ask the
    engine's resolver, which forwards what it does not know to the node's own nameservers,
    not to Shoal's: their questions to port 53 are sent to Shoal's server on the network's
    gateway instead, so that service names resolve for them as for tasks (Shoal's server
    forwards every other name to those same nameservers)."""

    bridge: Annotated[str, AfterValidator(_iface)]
    # this node's block of the network's addresses, where such containers live
    block: Annotated[str, AfterValidator(lambda v: str(ipaddress.IPv4Network(v, strict=False)))]
    gateway: Annotated[str, AfterValidator(_ip)]


class DatapathView(_Plain):
    """Everything the node's datapath implements. Rendering it is pure (render.py)."""

    ingress: list[IngressPort] = Field(default_factory=list)
    vips: list[Vip] = Field(default_factory=list)
    host_ports: list[HostPort] = Field(default_factory=list)
    # How a new connection picks a backend: "random" (numgen random, stateless) or
    # "roundrobin" (numgen inc; the counter restarts at each ruleset reload).
    balance: Literal["random", "roundrobin"] = "random"
    # Linux bridges of Shoal's networks on this node (VIP bridges are added implicitly).
    # apply() turns on hairpin mode on their ports so a replica can reach itself
    # through its service's VIP or a published port.
    bridges: list[str] = Field(default_factory=list)
    # Traffic still addressed to this range after the DNAT step (VIP without backends,
    # or a VIP of a network the sender is not on) is rejected instead of leaking out of
    # the node's default route.
    vip_supernet: Optional[str] = VIP_SUPERNET
    overlay: list[OverlaySource] = Field(default_factory=list)
    attached_dns: list[AttachedDns] = Field(default_factory=list)
