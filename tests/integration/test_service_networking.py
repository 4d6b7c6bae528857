"""Issue 3 on the real engine: service discovery by name, VIP and dnsrr, network isolation,
published-port conflicts and clean-up."""
from __future__ import annotations

import subprocess

import pytest

from conftest import containers, docker, http_get

pytestmark = pytest.mark.integration

HTTPD = '["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]'

STACK = f"""
services:
  api:
    image: shoal/busybox:latest
    command: {HTTPD}
    init: true
    deploy:
      replicas: 2
    networks: [back]
  rr:
    image: shoal/busybox:latest
    command: {HTTPD}
    init: true
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
    networks: [back]
  client:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    networks: [back, front]
  outsider:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    networks: [front]
  site:
    image: shoal/busybox:latest
    command: {HTTPD}
    init: true
    ports:
      - "18090:80"
    deploy:
      replicas: 2
networks:
  back:
  front:
"""


def sh_in(service: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    cid = containers(**{"shoal.service.name": service})[0]
    p = subprocess.run(["docker", "exec", cid, "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{script}: {p.stdout}{p.stderr}")
    return p


def resolve(service: str, name: str) -> list[str]:
    """The A records a container gets for `name` (busybox nslookup, answers after 'Name:')."""
    p = sh_in(service, f"nslookup {name}", check=False)
    out, addrs, seen_name = p.stdout, [], False
    for line in out.splitlines():
        if line.startswith("Name:"):
            seen_name = True
        elif seen_name and line.startswith("Address"):
            addrs.append(line.split()[-1])
    return addrs


def task_ips(service: str, network: str) -> set[str]:
    out = set()
    for cid in containers(**{"shoal.service.name": service}):
        out.add(docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', cid).strip())
    return out


@pytest.fixture(scope="module")
def net_stack(cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "net.yml"
    path.write_text(STACK)
    cluster.out("stack", "deploy", "-c", str(path), "net")
    cluster.wait_for(lambda: all(cluster.running(f"net_{s}") == n for s, n in
                                 (("api", 2), ("rr", 2), ("client", 1), ("outsider", 1), ("site", 2))),
                     timeout=120, what="net stack running")
    return path


def test_vip_names_resolve_to_one_stable_address(cluster, net_stack):
    vip_short = resolve("net_client", "api")
    vip_full = resolve("net_client", "net_api")
    assert len(vip_short) == 1 and vip_short == vip_full
    assert vip_short[0].startswith("10.211.")
    tasks = set(resolve("net_client", "tasks.api"))
    assert tasks == task_ips("net_api", "net_back") and len(tasks) == 2
    assert set(resolve("net_client", "tasks.net_api")) == tasks


def test_vip_balances_across_replicas(cluster, net_stack):
    seen = set()
    for _ in range(30):
        seen.add(sh_in("net_client", "timeout 5 wget -qO- http://api/").stdout.strip())
        if len(seen) == 2:
            break
    hostnames = {docker("inspect", "-f", "{{.Config.Hostname}}", c).strip()
                 for c in containers(**{"shoal.service.name": "net_api"})}
    assert seen == hostnames
    # by full name too
    assert sh_in("net_client", "timeout 5 wget -qO- http://net_api/").stdout.strip() in hostnames


def test_dnsrr_returns_the_replicas(cluster, net_stack):
    assert set(resolve("net_client", "rr")) == task_ips("net_rr", "net_back")
    assert sh_in("net_client", "timeout 5 wget -qO- http://rr/").stdout.strip()


def test_other_network_cannot_resolve_or_reach(cluster, net_stack):
    assert resolve("net_outsider", "api") == []
    ip = sorted(task_ips("net_api", "net_back"))[0]
    p = sh_in("net_outsider", f"timeout 4 wget -qO- http://{ip}/", check=False)
    assert p.returncode != 0


def test_names_follow_replicas(cluster, net_stack):
    cluster.out("service", "scale", "net_api=3")
    cluster.wait_for(lambda: len(resolve("net_client", "tasks.api")) == 3, timeout=60, what="3 task records")
    cluster.out("service", "scale", "net_api=1")
    cluster.wait_for(lambda: len(resolve("net_client", "tasks.api")) == 1, timeout=60, what="1 task record")
    assert sh_in("net_client", "timeout 5 wget -qO- http://api/").stdout.strip()


def test_external_names_still_resolve(cluster, net_stack):
    # not a service name: forwarded to the node's resolvers (the answer itself may be NXDOMAIN
    # offline; what matters is that the server answers instead of timing out)
    p = sh_in("net_client", "nslookup localhost", check=False)
    assert "timed out" not in p.stdout + p.stderr


def test_published_port_answers_on_every_node_address(cluster, net_stack):
    seen = set()
    for _ in range(30):
        code, body = http_get("http://127.0.0.1:18090/")
        assert code == 200
        seen.add(body.strip())
    assert len(seen) == 2
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                           text=True).stdout.split()
    node_ips = [a.split("/")[0] for i, a in enumerate(addrs) if addrs[i - 1] == "inet"
                and not a.startswith(("10.210.", "172.17."))]
    assert node_ips
    code, body = http_get(f"http://{node_ips[0]}:18090/")
    assert code == 200 and body.strip() in seen


def test_port_conflicts_are_refused(cluster, net_stack, tmp_path):
    other = tmp_path / "other.yml"
    other.write_text('services:\n  web:\n    image: shoal/busybox:latest\n    ports: ["18090:80"]\n')
    p = cluster.run("stack", "deploy", "-c", str(other), "other", check=False)
    assert p.returncode == 1
    assert "18090" in p.stderr and "net_site" in p.stderr and "other_web" in p.stderr
    assert "other" not in cluster.out("stack", "ls")


def test_port_held_by_another_process_is_refused(cluster, net_stack, tmp_path):
    import socket
    import sys
    import time
    holder = subprocess.Popen([sys.executable, "-m", "http.server", "18095", "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", 18095)) == 0:
                    break
            time.sleep(0.1)
        time.sleep(6)  # one agent heartbeat: the manager learns the node's ports in use
        f = tmp_path / "held.yml"
        f.write_text('services:\n  web:\n    image: shoal/busybox:latest\n    ports: ["18095:80"]\n')
        p = cluster.run("stack", "deploy", "-c", str(f), "held", check=False)
        assert p.returncode == 1
        assert "18095" in p.stderr and "held_web" in p.stderr and f"pid {holder.pid}" in p.stderr
        assert "held" not in cluster.out("stack", "ls")
    finally:
        holder.terminate()
        holder.wait()


def test_shared_external_network(cluster, net_stack, tmp_path):
    cluster.out("network", "create", "--attachable", "shared-net")
    a = tmp_path / "a.yml"
    a.write_text(f"services:\n  pub:\n    image: shoal/busybox:latest\n    command: {HTTPD}\n    init: true\n"
                 "    networks: [shared]\nnetworks:\n  shared:\n    external: true\n    name: shared-net\n")
    b = tmp_path / "b.yml"
    b.write_text("services:\n  sub:\n    image: shoal/busybox:latest\n    command: [sleep, '3600']\n    init: true\n"
                 "    networks: [shared]\nnetworks:\n  shared:\n    external: true\n    name: shared-net\n")
    cluster.out("stack", "deploy", "-c", str(a), "sa")
    cluster.out("stack", "deploy", "-c", str(b), "sb")
    cluster.wait_for(lambda: cluster.running("sa_pub") == 1 and cluster.running("sb_sub") == 1, timeout=90)
    cluster.wait_for(lambda: sh_in("sb_sub", "timeout 5 wget -qO- http://sa_pub/", check=False).returncode == 0,
                     timeout=30, what="cross-stack name on a shared network")
    # a user's own container on the attachable network (`docker run --network`, as with Swarm):
    # an address from the node's block, and the service's name answers it
    pub = sh_in("sa_pub", "hostname").stdout.strip()
    block = docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.IPRange}}{{end}}", "shared-net").strip()
    got = docker("run", "--rm", "--network", "shared-net", "shoal/busybox:latest", "sh", "-c",
                 "ip -4 -o addr show dev eth0 | awk '{print $4}'; timeout 5 wget -qO- http://sa_pub/")
    mine, page = got.split()[:2]
    import ipaddress
    assert ipaddress.ip_interface(mine).ip in ipaddress.ip_network(block), (mine, block)
    assert page == pub
    p = cluster.run("network", "rm", "shared-net", check=False)
    assert p.returncode == 1 and "in use" in p.stderr
    cluster.out("stack", "rm", "sa", "sb")
    cluster.wait_for(lambda: cluster.run("network", "rm", "shared-net", check=False).returncode == 0, timeout=30)


def test_docker_run_on_a_network_that_is_not_attachable_is_refused(cluster, net_stack):
    """As Swarm refuses it: the engine has no address of its own to give on a stack network
    (its tasks take the manager's), so a user's container cannot take a task's address."""
    p = subprocess.run(["docker", "run", "--rm", "--network", "net_back", "shoal/busybox:latest", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "no available IPv4 addresses" in p.stderr, p.stderr


def test_clean_up_leaves_nothing(cluster, net_stack):
    cluster.out("stack", "rm", "net")
    cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "net"}), timeout=90,
                     what="containers gone")
    cluster.wait_for(lambda: not [n for n in docker("network", "ls", "--format", "{{.Name}}").split()
                                  if n.startswith("net_")], timeout=30, what="networks gone")
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    assert "18090" not in rules
    code = None
    try:
        code, _ = http_get("http://127.0.0.1:18090/", timeout=3)
    except OSError:
        pass
    assert code is None
