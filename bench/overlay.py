"""The overlay between two lab hosts: Shoal's VXLAN beside the underlay, and beside Swarm's.

    python3 bench/overlay.py [--reps 3] [--seconds 5] [--no-record]

Each repetition builds a fresh lab of two hosts (scripts/lab.sh, each with its own Docker
Engine) and measures, in the same run:

- underlay: iperf3 (one TCP stream) between the two hosts' namespaces directly, and the
  ping round trip: the reference every other figure is a share of;
- Shoal: a container on lab1 to a container on lab2 over a Shoal overlay network (their
  task addresses); the routing mesh entered on lab1, which has no replica (so the mesh
  forwards over the overlay), beside a `mode: host` port on lab2 (no mesh: the replica's
  node, straight to it) — the issue's "mesh on a node without a replica vs direct";
- Shoal again with two `docker run` containers on an attachable Shoal network, as Swarm's;
- Swarm: the same two containers on an attachable Swarm overlay (`docker run --network`);
  its routing mesh and VIPs need IPVS, which this kernel lacks: recorded as not runnable.

iperf3 is Debian's, run on the lab host inside each container's network namespace
(nsenter): the same program on every path, so the paths are what differs. busybox `nc`
tops out near 50 MB/s whatever the network and cannot measure an overlay.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LAB = os.path.join(ROOT, "scripts", "lab.sh")
LAB_LOCK = "/tmp/shoal-lab.lock"
RESULTS = os.path.join(HERE, "RESULTS.md")
SWARM_DOC = {"overlay": "1,560 MB/s (78 % of 2,006)"}  # ../shared/SWARM-REFERENCE.md, measured here
STACK = """services:
  srv:
    image: shoal/busybox:latest
    command: [sleep, "36000"]
    init: true
    stop_grace_period: 1s
    networks: [net]
    ports:
      - {target: 5201, published: 15201}
      - {target: 5201, published: 15202, mode: host}
    deploy:
      placement: {constraints: [node.hostname == lab2]}
  cli:
    image: shoal/busybox:latest
    command: [sleep, "36000"]
    init: true
    stop_grace_period: 1s
    networks: [net]
    deploy:
      placement: {constraints: [node.hostname == lab1]}
networks:
  net:
    driver: overlay
"""


def lab(*args: str, check: bool = True, timeout: float = 300) -> str:
    p = subprocess.run(["bash", LAB, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"lab.sh {' '.join(args)}: {p.stdout[-1500:]} {p.stderr[-1500:]}")
    return p.stdout


def ok(*args: str) -> bool:
    return subprocess.run(["bash", LAB, *args], capture_output=True, timeout=120).returncode == 0


def addr(host: str) -> str:
    return lab("addr", host).strip()


def until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except (RuntimeError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"timed out after {timeout:.0f}s: {what}")


# -- measuring ------------------------------------------------------------------------------

def pid_of(host: str, name_filter: str) -> str:
    cid = lab("exec", host, "docker", "ps", "-q", "--filter", name_filter).split()[0]
    return lab("exec", host, "docker", "inspect", "-f", "{{.State.Pid}}", cid).strip()


def in_ns(pid: str) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net"] if pid else []


def ip_in(host: str, pid: str) -> str:
    out = lab("exec", host, *in_ns(pid), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    return out.split()[3].split("/")[0]


SERVERS: list[str] = []  # iperf3 pid files: a server outlives its lab host's namespace


def iperf_server(host: str, pid: str = "") -> None:
    pidfile = os.path.join(tempfile.gettempdir(), f"shoal-bench-iperf3-{host}-{pid or 'host'}.pid")
    lab("exec", host, *in_ns(pid), "iperf3", "-s", "-D", "-p", "5201", "-I", pidfile)
    SERVERS.append(pidfile)
    time.sleep(0.3)


def stop_servers() -> None:
    while SERVERS:
        path = SERVERS.pop()
        try:
            with open(path) as f:
                os.kill(int(f.read().strip().strip("\0")), 15)
            os.unlink(path)
        except (OSError, ValueError):
            pass


def iperf(host: str, pid: str, target: str, port: int, seconds: int) -> float:
    """MB/s the receiver got over one TCP stream."""
    out = lab("exec", host, *in_ns(pid), "iperf3", "-c", target, "-p", str(port), "-t", str(seconds), "-J",
              timeout=seconds + 60)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8 / 1e6


def rtt(host: str, pid: str, target: str, count: int = 200) -> float:
    """Mean ICMP round trip, µs."""
    out = lab("exec", host, *in_ns(pid), "ping", "-q", "-c", str(count), "-i", "0.005", target)
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    if not m:
        raise RuntimeError(f"ping: {out}")
    return float(m.group(1)) * 1000


def fresh_lab() -> None:
    stop_servers()
    lab("down", check=False)
    lab("up", "2", timeout=600)


def run_underlay(seconds: int) -> dict[str, float]:
    iperf_server("lab2")
    return {"tput": iperf("lab1", "", addr("lab2"), 5201, seconds), "rtt": rtt("lab1", "", addr("lab2"))}


def run_shoal(seconds: int, stack_file: str) -> dict[str, float]:
    lab("exec", "lab1", "shoal", "init", "--advertise-addr", addr("lab1"))
    token = lab("exec", "lab1", "shoal", "join-token", "-q", "worker").strip()
    lab("exec", "lab2", "shoal", "join", "--token", token, f"{addr('lab1')}:4343")
    lab("exec", "lab1", "shoal", "stack", "deploy", "-c", stack_file, "--wait", "--timeout", "120", "ob",
        timeout=180)
    srv, cli = pid_of("lab2", "label=shoal.service.name=ob_srv"), pid_of("lab1", "label=shoal.service.name=ob_cli")
    iperf_server("lab2", srv)
    target = ip_in("lab2", srv)
    out = {"tput": iperf("lab1", cli, target, 5201, seconds), "rtt": rtt("lab1", cli, target)}
    # the mesh entered on lab1 (no replica there) vs the replica's node straight to it (mode: host)
    until(lambda: ok("exec", "lab1", "iperf3", "-c", addr("lab1"), "-p", "15201", "-t", "1"), 30, "the mesh")
    out["mesh"] = iperf("lab1", "", addr("lab1"), 15201, seconds)
    out["hostport"] = iperf("lab1", "", addr("lab2"), 15202, seconds)
    # the same two containers as Swarm's below: `docker run` on an attachable network
    lab("exec", "lab1", "shoal", "network", "create", "--driver", "overlay", "--attachable", "ob_att")
    asrv, acli = docker_run_pair("ob_att", "ob_asrv", "ob_acli", local_network=True)
    out["attached"] = iperf("lab1", acli, ip_in("lab2", asrv), 5201, seconds)
    return out


def docker_run_pair(network: str, server: str, client: str, local_network: bool = False) -> tuple[str, str]:
    """`docker run` a server on lab2 and a client on lab1 on an attachable network; the
    server's iperf3 started: (server pid, client pid). `local_network`: the network is on each
    host's engine before any container (Shoal's; Swarm's appears with its first container)
    -- wait for it there: the engine (20.10) creates a container for a network it does not
    have yet, then fails to start it ("network ... not found"), and the name stays taken."""
    for host, name in (("lab2", server), ("lab1", client)):
        if local_network:
            until(lambda: ok("exec", host, "docker", "network", "inspect", network), 30, f"{network} on {host}")
        until(lambda: lab("exec", host, "docker", "run", "-d", "--init", "--name", name, "--network", network,
                          "shoal/busybox:latest", "sleep", "36000", check=False), 60, f"{name} on {host}")
        until(lambda: lab("exec", host, "docker", "ps", "-q", "--filter", f"name={name}").strip(), 30, name)
    srv, cli = pid_of("lab2", f"name={server}"), pid_of("lab1", f"name={client}")
    iperf_server("lab2", srv)
    return srv, cli


def run_swarm(seconds: int) -> dict[str, float]:
    lab("exec", "lab1", "docker", "swarm", "init", "--advertise-addr", addr("lab1"))
    token = lab("exec", "lab1", "docker", "swarm", "join-token", "-q", "worker").strip()
    lab("exec", "lab2", "docker", "swarm", "join", "--token", token, f"{addr('lab1')}:2377")
    lab("exec", "lab1", "docker", "network", "create", "-d", "overlay", "--attachable", "ob_net")
    srv, cli = docker_run_pair("ob_net", "ob_srv", "ob_cli")
    target = ip_in("lab2", srv)
    return {"tput": iperf("lab1", cli, target, 5201, seconds), "rtt": rtt("lab1", cli, target)}


# -- reporting ------------------------------------------------------------------------------

def mmm(xs: list[float], unit: str, fmt: str = "{:,.0f}") -> str:
    if not xs:
        return "—"
    return f"{fmt.format(min(xs))} / {fmt.format(statistics.median(xs))} / {fmt.format(max(xs))} {unit}"


def share(part: list[float], whole: list[float]) -> list[float]:
    return [p / w * 100 for p, w in zip(part, whole)]


def report(res: dict[str, list[dict]], args, wall: float) -> str:
    und, sho, swa = res["underlay"], res["shoal"], res["swarm"]
    col = lambda rows, k: [r[k] for r in rows if k in r]  # noqa: E731
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — overlay across two lab hosts",
        "",
        f"- command: `python3 bench/overlay.py --reps {args.reps} --seconds {args.seconds}`",
        f"- machine: {os.cpu_count()} cores, kernel {platform.release()}, lab of 2 hosts (scripts/lab.sh), "
        f"iperf3 one TCP stream of {args.seconds} s, ping 200 × 5 ms; wall time {wall:.0f} s",
        "- each rep: a fresh lab; underlay, Shoal and Swarm measured in the same rep (Shoal and Swarm on "
        "fresh engines each); per-rep shares are of that rep's underlay",
        "",
        "| measure | underlay (min / median / max) | Shoal | Swarm | Swarm doc |",
        "|---|---|---|---|---|",
        f"| one TCP stream, container → container on another host | {mmm(col(und, 'tput'), 'MB/s')} | "
        f"{mmm(col(sho, 'tput'), 'MB/s')} | {mmm(col(swa, 'tput'), 'MB/s')} | {SWARM_DOC['overlay']} |",
        f"| share of the underlay (per rep) | 100 % | {mmm(share(col(sho, 'tput'), col(und, 'tput')), '%')} | "
        f"{mmm(share(col(swa, 'tput'), col(und, 'tput')), '%')} | 78 % |",
        f"| the same, `docker run` containers on an attachable network (as Swarm's) | — | "
        f"{mmm(col(sho, 'attached'), 'MB/s')} | (the row above) | — |",
        f"| share of the underlay (per rep) | — | {mmm(share(col(sho, 'attached'), col(und, 'tput')), '%')} | — | — |",
        f"| ping round trip (mean of 200) | {mmm(col(und, 'rtt'), 'µs')} | {mmm(col(sho, 'rtt'), 'µs')} | "
        f"{mmm(col(swa, 'rtt'), 'µs')} | — |",
        f"| routing mesh entered on a node without a replica | — | {mmm(col(sho, 'mesh'), 'MB/s')} | "
        "cannot run: its routing mesh needs IPVS, absent from this kernel | — |",
        f"| `mode: host` port on the replica's node (direct) | — | {mmm(col(sho, 'hostport'), 'MB/s')} | — | — |",
        f"| mesh / direct (per rep) | — | {mmm(share(col(sho, 'mesh'), col(sho, 'hostport')), '%')} | — | — |",
        "",
    ]
    if res.get("errors"):
        lines += [f"- error: {e}" for e in res["errors"]] + [""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    for tool, package in (("iperf3", "iperf3"), ("ping", "iputils-ping")):
        if not shutil.which(tool):
            print(f"{tool} missing: apt-get install -y {package}", flush=True)
            subprocess.run(["apt-get", "install", "-y", package], check=True, capture_output=True, timeout=600)
    lock = open(LAB_LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one lab at a time on this machine (the tests take it too)
    stack = os.path.join(tempfile.mkdtemp(prefix="shoal-bench-overlay-"), "ob.yml")
    with open(stack, "w") as f:
        f.write(STACK)
    res: dict[str, list] = {"underlay": [], "shoal": [], "swarm": [], "errors": []}
    t0 = time.monotonic()
    try:
        for rep in range(args.reps):
            order = ["shoal", "swarm"] if rep % 2 == 0 else ["swarm", "shoal"]
            for who in order:
                fresh_lab()
                try:
                    if who == order[0]:
                        res["underlay"].append(run_underlay(args.seconds))
                    got = run_shoal(args.seconds, stack) if who == "shoal" else run_swarm(args.seconds)
                    res[who].append(got)
                    print(f"rep {rep + 1} {who}: {json.dumps({k: round(v, 1) for k, v in got.items()})}", flush=True)
                except RuntimeError as e:
                    res["errors"].append(f"rep {rep + 1} {who}: {str(e)[:400]}")
                    print(f"rep {rep + 1} {who}: ERROR {e}", flush=True)
            if res["underlay"]:
                print(f"rep {rep + 1} underlay: {json.dumps({k: round(v, 1) for k, v in res['underlay'][-1].items()})}",
                      flush=True)
    finally:
        stop_servers()
        lab("down", check=False)
        lock.close()
    text = report(res, args, time.monotonic() - t0)
    print("\n" + text)
    if not args.no_record:
        with open(RESULTS, "a") as f:
            f.write("\n" + text)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
