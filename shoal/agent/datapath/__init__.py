"""Shoal's node datapath: routing mesh for published ports and service VIPs with
nftables (no IPVS), and service-name DNS. See docs/datapath.md."""
from shoal.agent.datapath.kernel import apply, apply_async, teardown, teardown_async
from shoal.agent.datapath.dns import DnsNetwork, DnsServer, DnsService, DnsView
from shoal.agent.datapath.ports import check_port_free
from shoal.agent.datapath.render import render_ruleset
from shoal.agent.datapath.view import (AddressPlan, Backend, DatapathView, HostPort,
                                       IngressPort, Vip)

__all__ = [
    "AddressPlan", "Backend", "DatapathView", "DnsNetwork", "DnsServer", "DnsService",
    "DnsView", "HostPort", "IngressPort", "Vip", "apply", "apply_async", "check_port_free",
    "render_ruleset", "teardown", "teardown_async",
]
