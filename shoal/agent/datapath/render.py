"""Pure rendering of a :class:`DatapathView` into one ``nft -f`` script.

The script replaces Shoal's own table (``table ip shoal``) in a single nftables
transaction: ``table ip shoal {}`` (create if missing) + ``delete table ip shoal`` +
the new table. The kernel applies the whole file atomically, so an update never leaves
a moment without rules; the tables of the Docker Engine (``ip nat``, ``ip filter``) are
never touched.

Hooks used (numbers are nftables priorities; Docker's iptables-nft chains sit at
dstnat -100 / filter 0 / srcnat 100):

* ``prerouting`` nat -110: published ports (ingress and host mode) for traffic from
  other hosts and from containers (``fib daddr type local``), VIPs for traffic coming
  from the VIP's own bridge (``iifname . ip daddr``).
* ``output`` nat -110: the same for connections made by the node itself
  (127.0.0.1:port, <node address>:port, VIPs).
* ``postrouting`` nat 90: masquerade only (a) DNATed connections whose source is in
  127.0.0.0/8 (they leave through a bridge) and (b) hairpin connections, where DNAT
  picked the very container that opened the connection. Everything else keeps the
  client's source address.
* ``input`` / ``forward`` / ``output`` filter -10: reject (TCP reset, ICMP otherwise)
  published ports without backends and VIP traffic that was not DNATed; drop packets
  from non-loopback interfaces to 127.0.0.0/8 that are not replies (route_localnet is
  on, see kernel.py).

Connections DNATed to a published port get the conntrack mark bit
:data:`INGRESS_CT_MARK`; a rule in Docker's ``DOCKER-USER`` chain accepts them (an
``accept`` in Shoal's table cannot override the ``drop`` policy of Docker's FORWARD).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from shoal.agent.datapath.view import Backend, DatapathView

TABLE_FAMILY = "ip"
TABLE_NAME = "shoal"
INGRESS_CT_MARK = 0x01000000  # conntrack mark bit of connections to published ports

PRIO_DNAT = -110
PRIO_SNAT = 90
PRIO_FILTER = -10


def _q(text: str) -> str:
    """A string safe inside nft double quotes (comments)."""
    return "".join(c for c in text if c.isalnum() or c in "-_.:/ +=@")[:120]


def _numgen(view: DatapathView, n: int) -> str:
    kind = "inc" if view.balance == "roundrobin" else "random"
    return f"numgen {kind} mod {n}"


def _dnat_ports(view: DatapathView, proto: str, backends: list[Backend]) -> str:
    if len(backends) == 1:
        b = backends[0]
        return f"meta l4proto {proto} dnat ip to {b.ip}:{b.port}"
    elems = ", ".join(f"{i} : {b.ip} . {b.port}" for i, b in enumerate(backends))
    return (f"meta l4proto {proto} dnat ip addr . port to "
            f"{_numgen(view, len(backends))} map {{ {elems} }}")


def _dnat_addr(view: DatapathView, backends: list[str]) -> str:
    if len(backends) == 1:
        return f"dnat ip to {backends[0]}"
    elems = ", ".join(f"{i} : {ip}" for i, ip in enumerate(backends))
    return f"dnat ip to {_numgen(view, len(backends))} map {{ {elems} }}"


def _reject(proto: str) -> str:
    return "reject with tcp reset" if proto == "tcp" else "reject"


def _vip_chain(vip: str) -> str:
    return "vip_" + vip.replace(".", "_")


def _set(elems: Iterable[str]) -> str:
    return "{ " + ", ".join(elems) + " }"


def validate(view: DatapathView) -> None:
    """Raise ValueError on a view that cannot be rendered unambiguously."""
    seen: dict[tuple[str, int], str] = {}
    for kind, items in (("ingress", view.ingress), ("host", view.host_ports)):
        for p in items:
            key = (p.protocol, p.published)
            if key in seen:
                raise ValueError(
                    f"port {p.published}/{p.protocol} published twice "
                    f"({seen[key]} and {kind} {p.service or '?'})")
            seen[key] = f"{kind} {p.service or '?'}"
    vips: set[str] = set()
    for v in view.vips:
        if v.vip in vips:
            raise ValueError(f"VIP {v.vip} listed twice")
        vips.add(v.vip)
        net = ipaddress.IPv4Network(v.subnet)
        if ipaddress.IPv4Address(v.vip) in net:
            raise ValueError(f"VIP {v.vip} must be off-link, not inside {v.subnet}")
        for b in v.backends:
            if ipaddress.IPv4Address(b) not in net:
                raise ValueError(f"backend {b} of VIP {v.vip} is not in {v.subnet}")


def render_ruleset(view: DatapathView) -> str:
    """The complete ``nft -f`` script for Shoal's table (pure, deterministic)."""
    validate(view)
    # Published ports: (proto, port) -> (chain, backends, comment)
    ports = []
    for p in sorted(view.ingress, key=lambda p: (p.protocol, p.published)):
        ports.append((p.protocol, p.published, f"pub_{p.protocol}_{p.published}",
                      list(p.backends), f"ingress {p.service}".strip()))
    for h in sorted(view.host_ports, key=lambda p: (p.protocol, p.published)):
        ports.append((h.protocol, h.published, f"host_{h.protocol}_{h.published}",
                      [Backend(ip=h.ip, port=h.target)], f"host {h.service}".strip()))
    live_ports = [p for p in ports if p[3]]
    empty_ports = [p for p in ports if not p[3]]
    vips = sorted(view.vips, key=lambda v: ipaddress.IPv4Address(v.vip))
    live_vips = [v for v in vips if v.backends]

    # Hairpin pairs: a backend reaching itself through a VIP or a published port.
    hairpin = sorted({b.ip for p in live_ports for b in p[3]}
                     | {ip for v in live_vips for ip in v.backends},
                     key=ipaddress.IPv4Address)

    out: list[str] = [
        "# Generated by shoal.agent.datapath - do not edit; replaced as a whole.",
        f"table {TABLE_FAMILY} {TABLE_NAME} {{}}",
        f"delete table {TABLE_FAMILY} {TABLE_NAME}",
        f"table {TABLE_FAMILY} {TABLE_NAME} {{",
    ]
    w = out.append

    overlay = sorted((o for o in view.overlay if o.remote), key=lambda o: o.bridge)
    if overlay:
        w("\tset overlay_remote {")
        w("\t\ttype ifname . ipv4_addr")
        w("\t\telements = " + _set(f"\"{o.bridge}\" . {ip}" for o in overlay
                                    for ip in sorted(set(o.remote), key=ipaddress.IPv4Address)))
        w("\t}")
        w("\tmap overlay_source {")
        w("\t\ttype ifname : ipv4_addr")
        w("\t\telements = " + _set(f"\"{o.bridge}\" : {o.address}" for o in overlay))
        w("\t}")

    if hairpin:
        w("\tset hairpin {")
        w("\t\ttype ipv4_addr . ipv4_addr")
        w("\t\telements = " + _set(f"{ip} . {ip}" for ip in hairpin))
        w("\t}")

    for proto, port, chain, backends, comment in live_ports:
        w(f"\tchain {chain} {{")
        w(f"\t\tct mark set ct mark | {INGRESS_CT_MARK:#010x}")
        w(f"\t\t{_dnat_ports(view, proto, backends)} comment \"{_q(comment)}\"")
        w("\t}")
    for v in live_vips:
        w(f"\tchain {_vip_chain(v.vip)} {{")
        w(f"\t\t{_dnat_addr(view, v.backends)} comment \"{_q('vip ' + v.service)}\"")
        w("\t}")

    port_vmap = ""
    if live_ports:
        port_vmap = ("fib daddr type local meta l4proto . th dport vmap "
                     + _set(f"{proto} . {port} : jump {chain}"
                            for proto, port, chain, _, _ in live_ports))

    w("\tchain prerouting {")
    w(f"\t\ttype nat hook prerouting priority {PRIO_DNAT}; policy accept;")
    if port_vmap:
        w("\t\t" + port_vmap)
    if live_vips:
        w("\t\tiifname . ip daddr vmap "
          + _set(f"\"{v.bridge}\" . {v.vip} : jump {_vip_chain(v.vip)}" for v in live_vips))
    for a in sorted(view.attached_dns, key=lambda a: a.bridge):
        w(f"\t\tiifname \"{a.bridge}\" ip saddr {a.block} ip daddr != {a.gateway} meta l4proto {{ tcp, udp }} "
          f"th dport 53 dnat ip to {a.gateway} comment \"docker run containers ask the service DNS\"")
    w("\t}")

    w("\tchain output {")
    w(f"\t\ttype nat hook output priority {PRIO_DNAT}; policy accept;")
    if port_vmap:
        w("\t\t" + port_vmap)
    if live_vips:
        w("\t\tip daddr vmap "
          + _set(f"{v.vip} : jump {_vip_chain(v.vip)}" for v in live_vips))
    w("\t}")

    w("\tchain postrouting {")
    w(f"\t\ttype nat hook postrouting priority {PRIO_SNAT}; policy accept;")
    if overlay:
        w(f"\t\tct mark & {INGRESS_CT_MARK:#010x} == {INGRESS_CT_MARK:#010x} oifname . ip daddr @overlay_remote "
          "snat ip to oifname map @overlay_source comment \"routing mesh to another node\"")
        w("\t\tfib saddr type local oifname . ip daddr @overlay_remote "
          "snat ip to oifname map @overlay_source comment \"this node to another node\"")
    w("\t\tct status dnat ip saddr 127.0.0.0/8 masquerade comment \"loopback client\"")
    if hairpin:
        w("\t\tct status dnat ip saddr . ip daddr @hairpin masquerade comment \"hairpin\"")
    w("\t}")

    w("\tchain input {")
    w(f"\t\ttype filter hook input priority {PRIO_FILTER}; policy accept;")
    w("\t\tiifname != \"lo\" ip daddr 127.0.0.0/8 ct state != { established, related } drop"
      " comment \"route_localnet guard\"")
    for proto in ("tcp", "udp", "sctp"):
        dead = [p for p in empty_ports if p[0] == proto]
        if dead:
            w(f"\t\tmeta l4proto {proto} th dport " + _set(str(p[1]) for p in dead)
              + f" {_reject(proto)} comment \"no backends\"")
    w("\t}")

    # Destinations that must not leave the node un-DNATed: the VIP range, plus VIPs
    # without backends that lie outside it.
    stray_parts: list[str] = []
    sup = (ipaddress.IPv4Network(view.vip_supernet, strict=False)
           if view.vip_supernet else None)
    if sup is not None:
        stray_parts.append(str(sup))
    stray_parts += [v.vip for v in vips
                    if not v.backends and (sup is None or ipaddress.IPv4Address(v.vip) not in sup)]
    stray = _set(stray_parts) if len(stray_parts) > 1 else (stray_parts[0] if stray_parts else "")
    for name, hook in (("forward", "forward"), ("output_filter", "output")):
        w(f"\tchain {name} {{")
        w(f"\t\ttype filter hook {hook} priority {PRIO_FILTER}; policy accept;")
        if stray:
            w(f"\t\tip daddr {stray} meta l4proto tcp reject with tcp reset"
              " comment \"VIP not reachable from here or without backends\"")
            w(f"\t\tip daddr {stray} reject with icmp type admin-prohibited")
        w("\t}")

    w("}")
    return "\n".join(out) + "\n"
