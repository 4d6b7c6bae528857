import os
import shutil
import subprocess

import pytest

from shoal.agent.datapath.render import INGRESS_CT_MARK, render_ruleset, validate
from shoal.agent.datapath.view import AddressPlan, Backend, DatapathView, HostPort, IngressPort, Vip


def _view(**kw):
    base = dict(
        ingress=[IngressPort(published=8080, service="shop_web",
                             backends=[Backend(ip="10.210.1.2", port=80),
                                       Backend(ip="10.210.1.3", port=80)])],
        vips=[Vip(vip="10.211.1.2", bridge="br-abc", subnet="10.210.1.0/24",
                  backends=["10.210.1.2", "10.210.1.3"], service="shop_web")],
        host_ports=[HostPort(published=7070, ip="10.210.1.4", target=8000, service="shop_api")],
    )
    base.update(kw)
    return DatapathView(**base)


def test_replaces_own_table_atomically_and_only_it():
    s = render_ruleset(_view())
    lines = [ln for ln in s.splitlines() if ln and not ln.startswith("#")]
    assert lines[:3] == ["table ip shoal {}", "delete table ip shoal", "table ip shoal {"]
    assert "table ip nat" not in s and "table ip filter" not in s
    assert "flush ruleset" not in s


def test_ingress_balances_over_all_backends_in_prerouting_and_output():
    s = render_ruleset(_view())
    assert ("dnat ip addr . port to numgen random mod 2 map "
            "{ 0 : 10.210.1.2 . 80, 1 : 10.210.1.3 . 80 }") in s
    assert s.count("fib daddr type local meta l4proto . th dport vmap") == 2
    assert "tcp . 8080 : jump pub_tcp_8080" in s
    assert f"ct mark set ct mark | {INGRESS_CT_MARK:#010x}" in s


def test_roundrobin_uses_numgen_inc():
    assert "numgen inc mod 2" in render_ruleset(_view(balance="roundrobin"))


def test_host_port_dnats_to_its_task():
    s = render_ruleset(_view())
    assert "dnat ip to 10.210.1.4:8000" in s
    assert "tcp . 7070 : jump host_tcp_7070" in s


def test_vip_keeps_port_and_only_from_its_bridge():
    s = render_ruleset(_view())
    assert "dnat ip to numgen random mod 2 map { 0 : 10.210.1.2, 1 : 10.210.1.3 }" in s
    assert 'iifname . ip daddr vmap { "br-abc" . 10.211.1.2 : jump vip_10_211_1_2 }' in s
    assert "ip daddr vmap { 10.211.1.2 : jump vip_10_211_1_2 }" in s  # node itself


def test_masquerade_only_loopback_and_hairpin():
    s = render_ruleset(_view())
    masq = [ln.strip() for ln in s.splitlines() if "masquerade" in ln]
    assert masq == [
        'ct status dnat ip saddr 127.0.0.0/8 masquerade comment "loopback client"',
        'ct status dnat ip saddr . ip daddr @hairpin masquerade comment "hairpin"',
    ]
    assert "10.210.1.2 . 10.210.1.2, 10.210.1.3 . 10.210.1.3, 10.210.1.4 . 10.210.1.4" in s


def test_empty_backends_are_rejected():
    v = _view(ingress=[IngressPort(published=8080), IngressPort(protocol="udp", published=53)],
              vips=[Vip(vip="10.211.1.9", bridge="br-abc", subnet="10.210.1.0/24")],
              host_ports=[])
    s = render_ruleset(v)
    assert "pub_tcp_8080" not in s
    assert 'meta l4proto tcp th dport { 8080 } reject with tcp reset' in s
    assert 'meta l4proto udp th dport { 53 } reject' in s
    assert "ip daddr 10.211.0.0/16 meta l4proto tcp reject with tcp reset" in s
    assert "vip_10_211_1_9" not in s
    assert "@hairpin" not in s


def test_empty_view_renders_base_chains_only():
    s = render_ruleset(DatapathView())
    assert "chain prerouting" in s and "jump" not in s


def test_conflicts_are_refused():
    with pytest.raises(ValueError, match="published twice"):
        validate(_view(host_ports=[HostPort(published=8080, ip="10.210.1.4", target=1)]))
    with pytest.raises(ValueError, match="off-link"):
        validate(_view(vips=[Vip(vip="10.210.1.50", bridge="br-abc", subnet="10.210.1.0/24")]))
    with pytest.raises(ValueError, match="not in"):
        validate(_view(vips=[Vip(vip="10.211.1.5", bridge="br-abc", subnet="10.210.1.0/24",
                                 backends=["10.210.2.7"])]))
    with pytest.raises(ValueError):
        Vip(vip="10.211.1.5", bridge='br"; flush ruleset', subnet="10.210.1.0/24")


def test_deterministic():
    assert render_ruleset(_view()) == render_ruleset(_view())


def test_address_plan():
    p = AddressPlan.for_index(7)
    assert (p.subnet, p.gateway, p.vip_subnet, p.vip(2)) == (
        "10.210.7.0/24", "10.210.7.1", "10.211.7.0/24", "10.211.7.2")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_script_passes_nft_check():
    for v in (_view(), DatapathView(), _view(balance="roundrobin", ingress=[IngressPort(published=1)])):
        p = subprocess.run(["nft", "-c", "-f", "-"], input=render_ruleset(v),
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


def test_a_node_routes_only_to_its_own_replicas_until_the_overlay_exists():
    """Another node's replica is unreachable through this node's bridge, and its address may be
    a different container's here: the mesh, VIPs and DNS use local replicas only."""
    from shoal.agent.netplane import local_only
    eps = [{"name": "s_web", "backends": [{"addresses": {"s_default": "10.210.0.5"}},  # on this node
                                           {"addresses": {"s_default": "10.210.0.6"}}]},  # elsewhere
           {"name": "s_db", "backends": [{"addresses": {"s_default": "10.210.0.6"}}]}]  # 0.6 here is db's
    local = {("s_web", "s_default", "10.210.0.5"), ("s_db", "s_default", "10.210.0.6")}
    out = {e["name"]: [b["addresses"] for b in e["backends"]] for e in local_only(eps, local)}
    assert out == {"s_web": [{"s_default": "10.210.0.5"}], "s_db": [{"s_default": "10.210.0.6"}]}
