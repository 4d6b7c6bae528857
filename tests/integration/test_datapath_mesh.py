"""The node datapath against the real kernel and Docker Engine.

Builds two Docker bridge networks (label shoal.test=datapath), two busybox httpd
"replicas" of shop_web on network A, a client on A, a "secret" service on network B, and
a network namespace acting as another host (veth into a test bridge). Everything is
removed afterwards, also when a test fails.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from shoal.agent.datapath import kernel as ap
from shoal.agent.datapath.dns import DnsNetwork, DnsServer, DnsService, DnsView
from shoal.agent.datapath.ports import check_port_free
from shoal.agent.datapath.view import Backend, DatapathView, HostPort, IngressPort, Vip

pytestmark = pytest.mark.integration

IMAGE = "shoal/busybox:latest"
LABEL = "shoal.test=datapath"
NET_A, NET_B = "shtdp_a", "shtdp_b"
BR_A, BR_B = "shtdp-br-a", "shtdp-br-b"
SUB_A, SUB_B = "10.210.240.0/24", "10.210.241.0/24"
GW_A, GW_B = "10.210.240.1", "10.210.241.1"
WEB1, WEB2, CLIENT, RR1, SECRET = "10.210.240.11", "10.210.240.12", "10.210.240.20", "10.210.240.13", "10.210.241.11"
VIP_WEB, VIP_EMPTY, VIP_SECRET = "10.211.240.2", "10.211.240.3", "10.211.241.2"
NS, EXT_BR, EXT_HOST, EXT_PEER = "shtdp-ext", "shtdp-extbr", "10.99.240.1", "10.99.240.2"
HTTPD = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -vv -p 80 -h /www"


def sh(*argv, check=True, timeout=60, input=None):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {p.returncode} {p.stderr.strip()}")
    return p


def _docker_ok():
    return shutil.which("docker") and os.geteuid() == 0 and \
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0


if not _docker_ok():  # pragma: no cover
    pytest.skip("needs root and a Docker Engine", allow_module_level=True)


def cleanup():
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if ids:
        sh("docker", "rm", "-f", *ids, check=False)
    nets = sh("docker", "network", "ls", "-q", "--filter", f"label={LABEL}").stdout.split()
    if nets:
        sh("docker", "network", "rm", *nets, check=False)
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "link", "del", EXT_BR, check=False)
    ap.teardown()


def free_port(start=18080):
    for p in range(start, start + 200):
        if check_port_free("tcp", p) is None:
            return p
    raise RuntimeError("no free port")


def node_address():
    for ln in sh("ip", "-4", "-o", "addr", "show", "scope", "global").stdout.splitlines():
        f = ln.split()
        dev, addr = f[1], f[3].split("/")[0]
        if not dev.startswith(("docker", "br-", "shtdp", "veth")):
            return addr
    pytest.skip("no non-loopback address on this node")


class DnsThread:
    def __init__(self, view):
        self.loop = asyncio.new_event_loop()
        self.server = DnsServer(view)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def run(name, net, ip, cmd, *, hostname=None, dns=None):
    argv = ["docker", "run", "-d", "--init", "--name", name, "--label", LABEL,
            "--network", net, "--ip", ip, "--hostname", hostname or name]
    if dns:
        argv += ["--dns", dns]
    sh(*argv, IMAGE, "sh", "-c", cmd)


def dexec(name, *cmd, timeout=20):
    return subprocess.run(["docker", "exec", name, *cmd], capture_output=True, text=True,
                          timeout=timeout)


def http_get(url, *, via=None, netns=None, timeout=5):
    """Body of GET url (None on failure) and the elapsed time."""
    t0 = time.monotonic()
    cmd = ["timeout", str(timeout), "wget", "-qO-", url]
    if via:
        p = dexec(via, *cmd, timeout=timeout + 10)
    elif netns:
        p = subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True)
    else:
        p = subprocess.run(cmd, capture_output=True, text=True)
    return (p.stdout.strip() if p.returncode == 0 else None), time.monotonic() - t0


def nslookup(container, name):
    p = dexec(container, "nslookup", "-type=a", name)
    out = p.stdout + p.stderr
    if "NXDOMAIN" in out or "can't find" in out:
        return None
    # skip the "Server/Address: 127.0.0.11:53" header
    body = out.split("\n\n", 1)[1] if "\n\n" in out else out
    return sorted(set(re.findall(r"Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$", body, re.M)))


def view(port, host_port, balance="random"):
    web = [Backend(ip=WEB1, port=80), Backend(ip=WEB2, port=80)]
    return DatapathView(
        ingress=[IngressPort(published=port, backends=web, service="shop_web"),
                 IngressPort(published=port + 1, service="shop_down")],
        vips=[Vip(vip=VIP_WEB, bridge=BR_A, subnet=SUB_A, backends=[WEB1, WEB2], service="shop_web"),
              Vip(vip=VIP_EMPTY, bridge=BR_A, subnet=SUB_A, service="shop_down"),
              Vip(vip=VIP_SECRET, bridge=BR_B, subnet=SUB_B, backends=[SECRET], service="other_secret")],
        host_ports=[HostPort(published=host_port, ip=RR1, target=80, service="shop_rr")],
        bridges=[BR_A, BR_B],
        balance=balance,
    )


def dns_view():
    return DnsView(networks=[
        DnsNetwork(name=NET_A, gateway=GW_A, services=[
            DnsService(name="shop_web", stack="shop", vip=VIP_WEB, tasks=[WEB1, WEB2]),
            DnsService(name="shop_rr", stack="shop", endpoint_mode="dnsrr", tasks=[WEB1, RR1]),
        ]),
        DnsNetwork(name=NET_B, gateway=GW_B, services=[
            DnsService(name="other_secret", stack="other", vip=VIP_SECRET, tasks=[SECRET]),
        ]),
    ])


@pytest.fixture(scope="module")
def env():
    # The datapath is the node's: wait for any Shoal test cluster on this machine to finish.
    import fcntl
    lock = open("/tmp/shoal-node.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    cleanup()
    dns = None
    try:
        for net, sub, gw, br in ((NET_A, SUB_A, GW_A, BR_A), (NET_B, SUB_B, GW_B, BR_B)):
            sh("docker", "network", "create", "--label", LABEL, "--subnet", sub, "--gateway", gw,
               "-o", f"com.docker.network.bridge.name={br}", net)
        run("shtdp-web1", NET_A, WEB1, HTTPD, hostname="web1", dns=GW_A)
        run("shtdp-web2", NET_A, WEB2, HTTPD, hostname="web2", dns=GW_A)
        run("shtdp-rr1", NET_A, RR1, HTTPD, hostname="rr1", dns=GW_A)
        run("shtdp-client", NET_A, CLIENT, "exec sleep 3600", dns=GW_A)
        # hostnames must differ from service names: Docker's embedded DNS answers container
        # names, hostnames and network aliases itself, before asking Shoal's server
        run("shtdp-secret", NET_B, SECRET, HTTPD, hostname="secrethost", dns=GW_B)
        # another "host": a namespace behind a veth into a test bridge
        sh("ip", "link", "add", EXT_BR, "type", "bridge")
        sh("ip", "addr", "add", f"{EXT_HOST}/24", "dev", EXT_BR)
        sh("ip", "link", "set", EXT_BR, "up")
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", "shtdp-exth", "type", "veth", "peer", "name", "shtdp-extn")
        sh("ip", "link", "set", "shtdp-exth", "master", EXT_BR, "up")
        sh("ip", "link", "set", "shtdp-extn", "netns", NS)
        sh("ip", "-n", NS, "addr", "add", f"{EXT_PEER}/24", "dev", "shtdp-extn")
        sh("ip", "-n", NS, "link", "set", "shtdp-extn", "up")
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "-n", NS, "route", "add", "default", "via", EXT_HOST)
        port = free_port()
        host_port = free_port(port + 10)
        ap.apply(view(port, host_port))
        dns = DnsThread(dns_view())
        yield {"port": port, "host_port": host_port, "node": node_address()}
    finally:
        if dns is not None:
            dns.stop()
        cleanup()
        lock.close()


def _hosts(url, n=16, **kw):
    got = []
    for _ in range(n):
        body, _ = http_get(url, **kw)
        got.append(body)
    return got


def test_published_port_on_loopback_and_node_address(env):
    for host in ("127.0.0.1", env["node"], GW_A):
        got = _hosts(f"http://{host}:{env['port']}/")
        assert set(got) == {"web1", "web2"}, (host, got)


def test_published_port_from_another_host_keeps_source(env):
    for host in (EXT_HOST, env["node"]):
        got = _hosts(f"http://{host}:{env['port']}/", netns=NS)
        assert set(got) == {"web1", "web2"}, (host, got)
    logs = sh("docker", "logs", "shtdp-web1").stderr + sh("docker", "logs", "shtdp-web2").stderr
    assert f"[::ffff:{EXT_PEER}]" in logs


def test_published_port_from_container_on_same_bridge(env):
    got = _hosts(f"http://{GW_A}:{env['port']}/", via="shtdp-client", n=12)
    assert set(got) == {"web1", "web2"}, got


def test_published_port_from_container_on_other_network(env):
    got = _hosts(f"http://{GW_B}:{env['port']}/", via="shtdp-secret", n=12)
    assert set(got) == {"web1", "web2"}, got


def test_host_mode_port(env):
    assert http_get(f"http://127.0.0.1:{env['host_port']}/")[0] == "rr1"
    assert http_get(f"http://{EXT_HOST}:{env['host_port']}/", netns=NS)[0] == "rr1"


def test_vip_from_client_container(env):
    got = _hosts(f"http://{VIP_WEB}/", via="shtdp-client", n=12)
    assert set(got) == {"web1", "web2"}, got
    logs = sh("docker", "logs", "shtdp-web1").stderr + sh("docker", "logs", "shtdp-web2").stderr
    assert f"[::ffff:{CLIENT}]" in logs  # VIP clients on the bridge keep their address


def test_vip_hairpin(env):
    # web1 -> VIP: an answer from web1 itself only comes through a working hairpin
    # (bridge port hairpin mode + masquerade); a broken one shows as SYN retransmissions
    # that eventually land on web2.
    got = _hosts(f"http://{VIP_WEB}/", via="shtdp-web1", n=12)
    assert set(got) == {"web1", "web2"}, got
    assert f"[::ffff:{GW_A}]" in sh("docker", "logs", "shtdp-web1").stderr  # masqueraded


def test_vip_from_node(env):
    assert set(_hosts(f"http://{VIP_WEB}/", n=12)) == {"web1", "web2"}


def test_empty_backends_are_refused_not_hanging(env):
    # refused at once; a silent drop would hang until the 8 s timeout
    body, took = http_get(f"http://127.0.0.1:{env['port'] + 1}/", timeout=8)
    assert body is None and took < 4
    body, took = http_get(f"http://{EXT_HOST}:{env['port'] + 1}/", netns=NS, timeout=8)
    assert body is None and took < 4
    body, took = http_get(f"http://{VIP_EMPTY}/", via="shtdp-client", timeout=8)
    assert body is None and took < 4


def test_dns_names(env):
    c = "shtdp-client"
    assert nslookup(c, "web") == [VIP_WEB]
    assert nslookup(c, "shop_web") == [VIP_WEB]
    assert nslookup(c, "tasks.web") == sorted([WEB1, WEB2])
    assert nslookup(c, "tasks.shop_web") == sorted([WEB1, WEB2])
    assert nslookup(c, "rr") == sorted([WEB1, RR1])  # dnsrr: replicas, no VIP
    assert nslookup(c, "nosuch") is None
    assert nslookup(c, "shtdp-web2") == [WEB2]  # still answered by Docker itself
    assert nslookup("shtdp-secret", "secret") == [VIP_SECRET]
    body, _ = http_get("http://web/", via=c)
    assert body in ("web1", "web2")


def test_other_network_neither_resolvable_nor_reachable(env):
    c = "shtdp-client"
    assert nslookup(c, "secret") is None
    assert nslookup(c, "other_secret") is None
    assert nslookup(c, "tasks.secret") is None
    body, took = http_get(f"http://{VIP_SECRET}/", via=c, timeout=8)
    assert body is None and took < 4  # not DNATed from this bridge: rejected
    body, _ = http_get(f"http://{SECRET}/", via=c, timeout=3)
    assert body is None  # Docker's own isolation between bridges
    assert http_get(f"http://{VIP_SECRET}/", via="shtdp-secret")[0] == "secrethost"


def test_apply_is_idempotent(env):
    v = view(env["port"], env["host_port"], balance="roundrobin")
    ap.apply(v)
    ap.apply(v)
    rules = ap.shoal_docker_user_rules()
    assert len(rules) == 1
    first = [ln for ln in sh("iptables", "-S", "DOCKER-USER").stdout.splitlines()
             if ln.startswith("-A")][0]
    assert "shoal" in first
    assert sh("nft", "list", "tables").stdout.count("table ip shoal") == 1
    assert set(_hosts(f"http://127.0.0.1:{env['port']}/", n=4)) == {"web1", "web2"}


def test_zz_teardown_leaves_nothing(env):
    before = ap._load_state().get("sysctls", {})
    ap.teardown()
    # (the lab's bridge, shoallab0, and its forwarding rule belong to scripts/lab.sh, whose
    # tests may run at the same time on the other worker: not the datapath's)
    assert "shoal" not in sh("nft", "list", "ruleset").stdout.replace("shoallab", "")
    assert "shoal" not in sh("iptables", "-S", "DOCKER-USER").stdout.replace("shoallab", "")
    for key, old in before.items():
        assert ap.read_sysctl(key) == old
    assert not ap.STATE_FILE.exists()
    hp = [open(f"/sys/class/net/{p}/brport/hairpin_mode").read().strip()
          for p in ap.bridge_ports(BR_A)]
    assert hp and set(hp) == {"0"}
    assert http_get(f"http://127.0.0.1:{env['port']}/", timeout=2)[0] is None
