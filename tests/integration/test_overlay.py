"""Overlay networks across nodes (issue #14), on three lab hosts with real engines and kernels:
names, VIPs and dnsrr answers list replicas on every node, a published port answers on every
node from every replica, isolation holds across nodes, a lost node's endpoints leave and come
back, a network's VXLAN devices go when its last task leaves, bulk and many small requests
cross nodes, an encrypted network is refused (no ESP in this kernel) and address exhaustion is
shown on the task.

Requests inside containers use busybox `nc` (busybox `wget` crashes inside containers on the
lab's engines, see docs/lab.md); requests from a node use the host's python.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from lab import Lab, until

pytestmark = [pytest.mark.integration, pytest.mark.lab]

HTTPD = 'command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]'
BUSY = "    image: shoal/busybox:latest\n    init: true\n    stop_grace_period: 1s\n"
STACK = f"""services:
  web:
{BUSY}    {HTTPD}
    ports: ["8080:80"]
    networks: [front]
    deploy:
      replicas: 3
      placement: {{max_replicas_per_node: 1}}
  rr:
{BUSY}    {HTTPD}
    networks: [front]
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      placement: {{max_replicas_per_node: 1}}
  client:
{BUSY}    command: [sleep, "3600"]
    networks: [front]
    deploy:
      placement: {{constraints: [node.hostname == lab1]}}
  secret:
{BUSY}    {HTTPD}
    networks: [back]
    deploy:
      placement: {{constraints: [node.hostname == lab3]}}
networks:
  front:
    driver: overlay
  back:
    driver: overlay
"""
GET = "printf 'GET /{path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} {port}"


@pytest.fixture(scope="module")
def ov(lab3, tmp_path_factory):
    lab: Lab = lab3
    lab.cluster()
    lab.dir = tmp_path_factory.mktemp("overlay")
    path = Path(str(lab.dir), "ov.yml")
    path.write_text(STACK)
    lab.shoal("lab1", "stack", "deploy", "-c", str(path), "--wait", "--timeout", "120", "ov", timeout=180)
    yield lab


def client(lab: Lab) -> str:
    (cid,) = lab.containers("lab1", "ov_client")
    return cid


def sh(lab: Lab, script: str, host: str = "lab1", cid: str = "", check: bool = True) -> str:
    p = lab.exec(host, "docker", "exec", cid or client(lab), "sh", "-c", script, check=check, timeout=120)
    return p.stdout


def resolve(lab: Lab, name: str) -> list[str]:
    out = sh(lab, f"nslookup -type=a {name}", check=False)
    body = out.split("\n\n", 1)[1] if "\n\n" in out else ""
    return sorted(set(re.findall(r"Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$", body, re.M)))


def resolve_in(lab: Lab, host: str, cid: str, name: str) -> list[str]:
    """The A records `name` gets in container `cid` on `host`."""
    out = sh(lab, f"nslookup -type=a {name}", host=host, cid=cid, check=False)
    rest = out.split("\n\n", 1)[1] if "\n\n" in out else ""
    return sorted(set(re.findall(r"Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$", rest, re.M)))


def body(raw: str) -> str:
    parts = re.split(r"\r?\n\r?\n", raw, maxsplit=1)  # (subprocess' text mode turns \r\n into \n)
    return parts[1].strip() if len(parts) == 2 else ""


def hostnames(lab: Lab, service: str) -> dict[str, str]:
    """container hostname -> node, for the running replicas of `service`."""
    out = {}
    for h in lab.hosts:
        for cid in lab.containers(h, service):
            out[lab.docker(h, "exec", cid, "hostname").strip()] = h
    return out


def task_ips(lab: Lab, service: str, network: str) -> dict[str, str]:
    """task address on `network` -> node."""
    out = {}
    for h in lab.hosts:
        for cid in lab.containers(h, service):
            ip = lab.docker(h, "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                            cid).strip()
            out[ip] = h
    return out


def node_get(lab: Lab, host: str, url: str, n: int) -> list[str]:
    """`n` GETs of `url` from `host`'s own network namespace (fresh connections)."""
    code = ("import sys,urllib.request\n"
            "for _ in range(int(sys.argv[2])):\n"
            "    try:\n"
            "        print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())\n"
            "    except Exception as e:\n"
            "        print('ERR', e)\n")
    return lab.exec(host, "python3", "-c", code, url, str(n), timeout=120).stdout.split("\n")[:-1]


def test_replicas_spread_and_every_node_holds_the_segment(ov):
    lab = ov
    assert lab.running_on("ov_web") == {"lab1": 1, "lab2": 1, "lab3": 1}
    assert lab.running_on("ov_rr") == {"lab1": 1, "lab2": 1, "lab3": 1}
    for h in lab.hosts:
        links = lab.exec(h, "ip", "-d", "-o", "link", "show", "type", "vxlan").stdout
        assert re.search(r"vxlan id \d+ local " + re.escape(lab.addr(h)), links), (h, links)
        assert "dstport 4789" in links and "nolearning" in links and "mtu 1450" in links, links


def test_names_vip_and_dnsrr_list_replicas_on_every_node(ov):
    lab = ov
    ips = task_ips(lab, "ov_web", "ov_front")
    assert set(ips.values()) == {"lab1", "lab2", "lab3"}
    assert resolve(lab, "tasks.web") == sorted(ips)
    assert resolve(lab, "tasks.ov_web") == sorted(ips)
    (vip,) = resolve(lab, "web")
    assert resolve(lab, "ov_web") == [vip] and vip not in ips
    names = hostnames(lab, "ov_web")
    # every replica answers on its own address, from the client on lab1
    for ip, node in ips.items():
        who = body(sh(lab, GET.format(path="", ip=ip, port=80)))
        assert names.get(who) == node, (ip, node, who)
    # the VIP balances over the replicas of every node
    seen = set()
    for _ in range(40):
        seen.add(body(sh(lab, GET.format(path="", ip="web", port=80))))
        if seen == set(names):
            break
    assert seen == set(names)
    # dnsrr: the name itself lists every replica, no VIP
    rr = task_ips(lab, "ov_rr", "ov_front")
    assert set(rr.values()) == {"lab1", "lab2", "lab3"}
    assert resolve(lab, "rr") == sorted(rr) == resolve(lab, "tasks.rr")


def test_published_port_answers_on_every_node_from_every_replica(ov):
    lab = ov
    names = set(hostnames(lab, "ov_web"))
    for h in lab.hosts:
        for url in (f"http://{lab.addr(h)}:8080/", "http://127.0.0.1:8080/"):
            got = node_get(lab, "lab2" if "127.0.0.1" not in url else h, url, 30)
            assert not [g for g in got if g.startswith("ERR")], (h, url, got)
            assert set(got) == names, (h, url, set(got))


def test_isolation_across_nodes(ov):
    lab = ov
    assert resolve(lab, "secret") == []
    (secret_ip,) = task_ips(lab, "ov_secret", "ov_back")
    out = sh(lab, GET.format(path="", ip=secret_ip, port=80).replace("-w 5", "-w 2"), check=False)
    assert body(out) == "", out
    # and the other way: from the secret's replica on lab3 to a web replica on lab1
    web_on_lab1 = [ip for ip, n in task_ips(lab, "ov_web", "ov_front").items() if n == "lab1"][0]
    (sid,) = lab.containers("lab3", "ov_secret")
    out = sh(lab, GET.format(path="", ip=web_on_lab1, port=80).replace("-w 5", "-w 2"), host="lab3", cid=sid,
             check=False)
    assert body(out) == "", out


def test_bulk_transfer_and_many_small_requests_across_nodes(ov):
    lab = ov
    ips = task_ips(lab, "ov_web", "ov_front")
    far = [ip for ip, n in ips.items() if n == "lab3"][0]
    (cid,) = lab.containers("lab3", "ov_web")
    lab.docker("lab3", "exec", cid, "sh", "-c", "dd if=/dev/urandom of=/www/big bs=1M count=8 2>/dev/null")
    want = lab.docker("lab3", "exec", cid, "md5sum", "/www/big").split()[0]
    got = sh(lab, GET.format(path="big", ip=far, port=80) + " | sed '1,/^\\r$/d' | md5sum").split()[0]
    assert got == want  # 8 MB across nodes at MTU 1450: no stall, no corruption
    n = 200
    out = sh(lab, f"ok=0; for i in $(seq {n}); do {GET.format(path='', ip='web', port=80)} | grep -q '200 OK' "
                  f"&& ok=$((ok+1)); done; echo $ok")
    assert int(out.strip()) == n


def test_a_lost_node_leaves_every_table_and_comes_back(ov):
    lab = ov
    ips = task_ips(lab, "ov_web", "ov_front")
    on3 = {ip for ip, n in ips.items() if n == "lab3"}
    lab3_addr = lab.addr("lab3")

    def fdb_to_lab3(h: str) -> bool:
        return lab3_addr in lab.exec(h, "bridge", "fdb", "show").stdout

    assert fdb_to_lab3("lab1") and fdb_to_lab3("lab2")
    lab.kill("lab3")
    until("lab3's endpoints gone from names", lambda: not (set(resolve(lab, "tasks.web")) & on3), timeout=30)
    until("lab3's entries gone from lab1 and lab2", lambda: not fdb_to_lab3("lab1") and not fdb_to_lab3("lab2"),
          timeout=10)
    assert len(resolve(lab, "tasks.web")) == 2
    lab.start("lab3")  # power on: the engine, then Shoal
    lab.shoal("lab3", "start")
    until("lab3 ready", lambda: lab.nodes()["lab3"]["Status"] == "Ready", timeout=60)
    until("web back on three nodes", lambda: lab.running_on("ov_web") == {"lab1": 1, "lab2": 1, "lab3": 1},
          timeout=90)
    until("entries back", lambda: fdb_to_lab3("lab1") and fdb_to_lab3("lab2"), timeout=20)
    ips = task_ips(lab, "ov_web", "ov_front")
    until("names list lab3's replica again", lambda: resolve(lab, "tasks.web") == sorted(ips), timeout=20)
    far = [ip for ip, n in ips.items() if n == "lab3"][0]
    assert body(sh(lab, GET.format(path="", ip=far, port=80))) in hostnames(lab, "ov_web")


def test_encrypted_network_refused_naming_the_kernel_feature(ov):
    lab = ov
    p = lab.exec("lab1", "shoal", "network", "create", "--driver", "overlay", "--opt", "encrypted", "sealed",
                 check=False)
    assert p.returncode != 0 and "ESP" in (p.stdout + p.stderr), p
    path = Path(str(lab.dir), "enc.yml")
    path.write_text(f"services:\n  s:\n{BUSY}    command: [sleep, '3600']\n    networks: [sealed]\n"
                    "networks:\n  sealed:\n    driver: overlay\n    driver_opts:\n      encrypted: \"\"\n")
    p = lab.exec("lab1", "shoal", "stack", "deploy", "-c", str(path), "enc", check=False)
    assert p.returncode != 0 and "ESP" in (p.stdout + p.stderr), p
    assert "enc_s" not in lab.shoal("lab1", "service", "ls")
    assert "sealed" not in lab.shoal("lab1", "network", "ls")


def test_address_exhaustion_is_shown_on_the_task_and_the_mtu_is_the_users(ov):
    lab = ov
    path = Path(str(lab.dir), "tiny.yml")
    path.write_text(f"services:\n  s:\n{BUSY}    command: [sleep, '3600']\n    networks: [small]\n"
                    "    deploy:\n      replicas: 8\n"
                    "networks:\n  small:\n    driver: overlay\n    ipam:\n      config:\n"
                    "        - subnet: 10.123.45.0/29\n"
                    "    driver_opts:\n      com.docker.network.driver.mtu: \"1400\"\n")
    lab.shoal("lab1", "stack", "deploy", "-c", str(path), "tiny")
    until("the reason on a task", lambda: any("no free address" in t["Error"] for t in lab.tasks("tiny_s")),
          timeout=40)
    until("the tasks that got an address running", lambda: sum(lab.running_on("tiny_s").values()) >= 2, timeout=40)
    assert sum(lab.running_on("tiny_s").values()) < 8
    host = next(iter(lab.running_on("tiny_s")))
    cid = lab.containers(host, "tiny_s")[0]
    assert lab.docker(host, "exec", cid, "cat", "/sys/class/net/eth0/mtu").strip() == "1400"
    assert "mtu 1400" in lab.exec(host, "ip", "-o", "link", "show", "type", "vxlan").stdout
    lab.shoal("lab1", "stack", "rm", "tiny")


CGI = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s %s\\n" "$REMOTE_ADDR" "$(hostname)"\n'
PORTS = f"""services:
  local:
{BUSY}    command: [httpd, -f, -p, "80", -h, /www]
    volumes: ["CGI_PATH:/www/cgi-bin/who:ro"]
    ports: ["8090:80"]
    deploy:
      replicas: 2
      labels: {{shoal.traffic-policy: local}}
      placement: {{max_replicas_per_node: 1, constraints: [node.hostname != lab3]}}
  hostmode:
{BUSY}    command: [httpd, -f, -p, "80", -h, /www]
    volumes: ["CGI_PATH:/www/cgi-bin/who:ro"]
    ports: [{{target: 80, published: 8091, mode: host}}]
    deploy:
      replicas: 2
      placement: {{max_replicas_per_node: 1, constraints: [node.hostname != lab3]}}
"""


def test_local_traffic_policy_keeps_the_client_address_and_host_ports_bind_where_replicas_run(ov):
    """Beyond Swarm (moby#25526): a service labelled shoal.traffic-policy=local takes a
    published port's traffic only on the nodes that run a replica, which sees the client's
    own address. And `mode: host` ports bind on the nodes running a replica only."""
    lab = ov
    cgi = Path(str(lab.dir), "who")
    cgi.write_text(CGI)
    cgi.chmod(0o755)
    path = Path(str(lab.dir), "ports.yml")
    path.write_text(PORTS.replace("CGI_PATH", str(cgi)))
    lab.shoal("lab1", "stack", "deploy", "-c", str(path), "--wait", "--timeout", "90", "lp", timeout=150)
    client = lab.addr("lab3")
    for service, port in (("lp_local", 8090), ("lp_hostmode", 8091)):
        names = hostnames(lab, service)
        assert sorted(names.values()) == ["lab1", "lab2"]
        for node in ("lab1", "lab2"):
            got = node_get(lab, "lab3", f"http://{lab.addr(node)}:{port}/cgi-bin/who", 10)
            # (busybox httpd shows an IPv4 client as [::ffff:a.b.c.d])
            assert {g.split()[0].strip("[]").removeprefix("::ffff:") for g in got} == {client}, (service, node, got)  # the client's own address
            assert {names.get(g.split()[1]) for g in got} == {node}, (service, node, got)  # this node's replica
        # lab3 runs no replica: its port does not answer
        assert all(g.startswith("ERR") for g in node_get(lab, "lab2", f"http://{lab.addr('lab3')}:{port}/", 2))
    lab.shoal("lab1", "stack", "rm", "lp")


ATTACHED_STACK = f"""services:
  web:
{BUSY}    {HTTPD}
    networks: [att]
    deploy:
      replicas: 2
      placement: {{constraints: [node.hostname == lab1]}}
networks:
  att:
    external: true
"""


def test_attachable_network_takes_docker_run_containers_on_every_node(ov):
    """`network create --attachable`: `docker run --network` works on every node, each node's
    engine gives out only its own block, and users' containers reach each other, the
    services' tasks (by name and VIP) and are reached by them, across nodes."""
    lab = ov
    since = str(int(time.time()) - 1)
    lab.shoal("lab1", "network", "create", "--driver", "overlay", "--attachable", "att")
    ranges: dict[str, str] = {}

    def every_node_has_it() -> bool:
        for h in lab.hosts:
            out = lab.docker(h, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{.IPRange}}{{end}}",
                             "att", check=False).split()
            if len(out) == 2:
                ranges[h] = out[1]
        return len(ranges) == 3

    until("the attachable network on every node's engine, with a block of its own", every_node_has_it,
          timeout=60, what_else=lambda: ranges)
    import ipaddress
    blocks = [ipaddress.ip_network(r) for r in ranges.values()]
    assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:]), ranges
    # made once on each engine, with its block: not first closed to the engine's IPAM and then
    # replaced when the block came (a container `docker run` created in between would fail to
    # start); the store makes a new attachable network's pass a full one, which gives the blocks
    for h in lab.hosts:
        events = lab.docker(h, "events", "--since", since, "--until", str(int(time.time()) + 1),
                            "--filter", "type=network", "--format", "{{.Action}} {{.Actor.Attributes.name}}")
        assert [e for e in events.splitlines() if e.endswith(" att")] == ["create att"], (h, events)

    run = ["run", "-d", "--network", "att", "--init"]
    lab.docker("lab2", *run, "--name", "p2", "--network-alias", "pages", "shoal/busybox:latest", "sh", "-c",
               "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www")
    lab.docker("lab3", *run, "--name", "p3", "shoal/busybox:latest", "sleep", "600")
    try:
        ip2 = lab.docker("lab2", "inspect", "-f", "{{.NetworkSettings.Networks.att.IPAddress}}", "p2").strip()
        host2 = lab.docker("lab2", "exec", "p2", "hostname").strip()
        assert ipaddress.ip_address(ip2) in ipaddress.ip_network(ranges["lab2"])
        # a user's container on lab3 reaches one on lab2 over the overlay
        got: list[str] = []
        until("p3 (lab3) gets p2's page (lab2)",
              lambda: got.append(body(sh(lab, GET.format(path="", ip=ip2, port=80), host="lab3", cid="p3",
                                         check=False))) or got[-1] == host2,
              timeout=30, what_else=lambda: got[-3:])
        # a service on the network: its name resolves for the user's container (the engine's
        # resolver asks Shoal's), its VIP answers, and its task reaches the user's container
        path = Path(str(lab.dir), "at.yml")
        path.write_text(ATTACHED_STACK)
        lab.shoal("lab1", "stack", "deploy", "-c", str(path), "--wait", "--timeout", "120", "at", timeout=180)
        names: list[str] = []

        def resolves() -> bool:
            out = sh(lab, "nslookup -type=a at_web", host="lab3", cid="p3", check=False)
            rest = out.split("\n\n", 1)[1] if "\n\n" in out else ""
            names[:] = re.findall(r"Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$", rest, re.M)
            return len(names) == 1

        until("at_web resolves in p3 (a docker run container) to the VIP", resolves, timeout=30,
              what_else=lambda: names)
        web = hostnames(lab, "at_web")
        seen = {body(sh(lab, GET.format(path="", ip=names[0], port=80), host="lab3", cid="p3")) for _ in range(12)}
        assert seen == set(web), (seen, web)
        task = lab.containers("lab1", "at_web")[0]
        assert body(sh(lab, GET.format(path="", ip=ip2, port=80), host="lab1", cid=task)) == host2
        # the user's containers are known by name on every node, as Swarm registers them:
        # p2 (lab2) and its alias from p3 (lab3) and from the task (lab1)
        for host, cid in (("lab3", "p3"), ("lab1", task)):
            for name in ("p2", "pages"):
                until(f"{name} resolves to p2's address in {cid} on {host}",
                      lambda: resolve_in(lab, host, cid, name) == [ip2], timeout=30,
                      what_else=lambda: resolve_in(lab, host, cid, name))
        assert body(sh(lab, GET.format(path="", ip="p2", port=80), host="lab1", cid=task)) == host2
        assert body(sh(lab, GET.format(path="", ip="pages", port=80), host="lab3", cid="p3")) == host2
        # gone: its name leaves every node
        lab.docker("lab2", "rm", "-f", "p2")
        until("p2's name gone from lab3", lambda: resolve_in(lab, "lab3", "p3", "p2") == [], timeout=30,
              what_else=lambda: resolve_in(lab, "lab3", "p3", "p2"))
    finally:
        lab.docker("lab2", "rm", "-f", "p2", check=False)
        lab.docker("lab3", "rm", "-f", "p3", check=False)
        lab.shoal("lab1", "stack", "rm", "at", check=False)
    lab.shoal("lab1", "network", "rm", "att")
    until("the attachable network gone from every engine",
          lambda: all(not lab.docker(h, "network", "ls", "-q", "--filter", "name=^att$").strip() for h in lab.hosts),
          timeout=60)


def test_a_network_is_removed_everywhere_when_its_last_task_leaves(ov):
    lab = ov
    lab.shoal("lab1", "stack", "rm", "ov")

    def left() -> dict[str, str]:
        out = {}
        for h in lab.hosts:
            devices = lab.exec(h, "ip", "-o", "link", "show", "type", "vxlan").stdout.strip()
            networks = [n for n in lab.docker(h, "network", "ls", "--format", "{{.Name}}").split() if n.startswith("ov_")]
            if devices or networks:
                out[h] = f"{devices} {networks}"
        return out

    seen: dict[str, str] = {}

    def gone() -> bool:
        seen.clear()
        seen.update(left())
        return not seen

    until("no vxlan device and no network left on any node", gone, timeout=60, what_else=lambda: seen)
