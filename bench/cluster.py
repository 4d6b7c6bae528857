"""Shoal beside Docker Swarm on three lab hosts (scripts/lab.sh): join, deploy, node loss, a blip.

    python3 bench/cluster.py [join deploy nodeloss blip failover | all] [--reps 3] [--no-record]
                             [--shoal-store own|external]

Every repetition builds a fresh lab of 3 hosts (each its own Docker Engine 20.10), runs the
workload with Shoal, then with Swarm on new engines (odd reps Shoal first, even reps Swarm
first), and the figures of both are printed side by side (min / median / max, and the ratio
of the medians) with Swarm's reference figures measured on this kind of machine
(../shared/SWARM-REFERENCE.md). Both are observed the same way: their own API over the
manager's unix socket, polled every 20 ms, and the engines' containers.

- join: from the join command's start to the node `Ready` on the manager (Shoal's `join`
  returns once a manager accepted its first heartbeat; Swarm's is polled). The node's daemon
  runs before, on both sides: Swarm's is the engine; Shoal's is started with `shoal start`
  and waits for a cluster.
- deploy: a stack of 10 services x 3 busybox replicas over 3 nodes, from the command's start
  to 30 containers running on the engines.
- nodeloss: 6 replicas spread 2/2/2, kill -9 of lab3 (engine, containerd, shims, containers,
  agent): the time until the manager calls it down, and until 6 replicas run on the others.
- blip: lab3's link down for 3 s, then 15 s more: how many tasks were started elsewhere.
- failover: three managers (Shoal: `init --store etcd`, each manager with its etcd member, or
  with `--shoal-store external` the state in one etcd member on this machine's side of the
  lab bridge, `init --store etcd://…`; lab2 and lab3 joined with the manager token; Swarm:
  lab2 and lab3 joined as managers), 6 replicas 2/2/2, kill -9 of lab1 (the leader): the time
  until lab2 shows a leader among the living managers, until `service scale …=8` issued to
  lab2 (retried every 0.2 s) is accepted, until 6 replicas run on lab2 and lab3 (the scale
  applied), and until all 8 run there (the dead manager's tasks back elsewhere).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LAB = os.path.join(ROOT, "scripts", "lab.sh")
DEPLOY_STACK = os.path.join(HERE, "stacks", "deploy.yml")
LAB_LOCK = "/tmp/shoal-lab.lock"
RUN = "/run/shoal-lab"
DATA = "/var/lib/shoal-lab"
REFERENCE = {  # Swarm, measured here: SWARM-REFERENCE.md "Swarm on three hosts" (medians of 3)
    "join": ("join -> Ready", 0.13),
    "down": ("node loss: down", 13.5),
    "back": ("node loss: 6 running elsewhere", 19.1),
    "failover: leader": ("failover: a new leader", 14.7),
    "failover: scale accepted": ("failover: scale accepted", 22.3),
    "failover: all back": ("failover: dead manager's tasks elsewhere", 47.0),
}
POLL = 0.02
mono = time.monotonic


def lab(*args: str, check: bool = True, timeout: float = 300) -> str:
    p = subprocess.run(["bash", LAB, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"lab.sh {' '.join(args)}: {p.stderr[-2000:]}")
    return p.stdout


def addr(host: str) -> str:
    return lab("addr", host).strip()


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.path)
        self.sock = s


def get(sock: str, path: str):
    c = UnixHTTP(sock)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return json.loads(r.read())
    finally:
        c.close()


def until(pred: Callable[[], object], timeout: float, what: str) -> float:
    deadline = mono() + timeout
    while mono() < deadline:
        try:
            if pred():
                return mono()
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(POLL)
    raise RuntimeError(f"timed out after {timeout:.0f}s: {what}")


def engine_sock(host: str) -> str:
    return f"{RUN}/{host}/docker.sock"


def containers_running(hosts: list[str], label: Optional[str] = None) -> int:
    n = 0
    for h in hosts:
        q = "/containers/json"
        if label:
            q += "?filters=" + json.dumps({"label": [label]}).replace(" ", "")
        try:
            n += len(get(engine_sock(h), q))
        except OSError:
            pass
    return n


# -- the two orchestrators, driven the same way -------------------------------------------

class ShoalLab:
    name = "shoal"
    sock = f"{DATA}/lab1/shoal/shoal.sock"
    etcd: Optional[subprocess.Popen] = None

    def init(self, store: str = "") -> None:
        lab("exec", "lab1", "shoal", "init", "--advertise-addr", addr("lab1"), *(["--store", store] if store else []))

    def use(self, host: str) -> None:
        """Ask this host's manager from now on."""
        self.sock = f"{DATA}/{host}/shoal/shoal.sock"
        self.host = host

    def __init__(self, store: str = "own"):
        self.store = store  # own: the managers run their etcd members; external: one etcd on the bridge

    def managers(self) -> None:
        """Three managers: each with its own etcd member (`init --store etcd`), or the state in
        one etcd member on this machine's side of the lab bridge (`--shoal-store external`)."""
        if self.store == "own":
            self.init("etcd")
            token = lab("exec", "lab1", "shoal", "join-token", "-q", "manager").strip()
            for h in ("lab2", "lab3"):
                lab("exec", h, "shoal", "join", "--token", token, f"{addr('lab1')}:4343")
            return
        import shutil
        shutil.rmtree("/tmp/shoal-bench-etcd", ignore_errors=True)
        port = 23790
        self.etcd = subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", "/tmp/shoal-bench-etcd",
             "--listen-client-urls", f"http://10.77.0.1:{port}", "--advertise-client-urls", f"http://10.77.0.1:{port}",
             "--listen-peer-urls", "http://127.0.0.1:23800", "--initial-advertise-peer-urls", "http://127.0.0.1:23800",
             "--initial-cluster", "bench=http://127.0.0.1:23800"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(lambda: subprocess.run(["curl", "-sf", f"http://10.77.0.1:{port}/health"], capture_output=True)
              .returncode == 0, 20, "etcd healthy")
        self.init(f"etcd://10.77.0.1:{port}")
        token = lab("exec", "lab1", "shoal", "join-token", "-q", "manager").strip()
        for h in ("lab2", "lab3"):
            lab("exec", h, "shoal", "join", "--token", token, f"{addr('lab1')}:4343")

    def leader(self) -> str:
        for n in get(self.sock, "/v1/nodes"):
            if n.get("leader") and n["state"] != "down":
                return n["description"]["hostname"]
        return ""

    def scale(self, service: str, n: int) -> bool:
        return subprocess.run(["bash", LAB, "exec", self.host, "shoal", "service", "scale", f"b_{service}={n}"],
                              capture_output=True, timeout=30).returncode == 0

    def cleanup(self) -> None:
        if self.etcd is not None:
            self.etcd.kill()
            self.etcd.wait()
            self.etcd = None

    def join(self, host: str) -> float:
        token = lab("exec", "lab1", "shoal", "join-token", "-q", "worker").strip()
        # the node's daemon runs before the join, as Swarm's engine does (`shoal start`)
        lab("exec", host, "shoal", "start")
        t0 = mono()
        lab("exec", host, "shoal", "join", "--token", token, f"{addr('lab1')}:4343")
        t1 = until(lambda: self.node_state(host) == "ready", 30, f"{host} ready")
        return t1 - t0

    def node_state(self, host: str) -> str:
        for n in get(self.sock, "/v1/nodes"):
            if n["description"]["hostname"] == host:
                return n["state"]
        return ""

    def deploy(self, file: str, stack: str) -> None:
        lab("exec", "lab1", "shoal", "stack", "deploy", "-c", file, stack)

    def create(self, name: str, replicas: int) -> None:
        path = f"/tmp/shoal-bench-{name}.yml"
        with open(path, "w") as f:
            f.write(f"services:\n  {name}:\n    image: shoal/busybox:latest\n    init: true\n"
                    f"    command: [sleep, '3600']\n    stop_grace_period: 1s\n"
                    f"    deploy:\n      replicas: {replicas}\n")
        lab("exec", "lab1", "shoal", "stack", "deploy", "-c", path, "b")

    def running(self, service: str, exclude_host: str = "") -> int:
        nodes = {n["id"]: n for n in get(self.sock, "/v1/nodes")}
        svc = get(self.sock, f"/v1/services/b_{service}")
        n = 0
        for t in get(self.sock, f"/v1/tasks?service={svc['id']}"):
            node = nodes.get(t.get("node_id") or "")
            if (t["desired_state"] == "running" and t["status"]["state"] == "running" and node is not None
                    and node["state"] == "ready" and node["description"]["hostname"] != exclude_host):
                n += 1
        return n

    def task_ids(self, service: str) -> set[str]:
        svc = get(self.sock, f"/v1/services/b_{service}")
        return {t["id"] for t in get(self.sock, f"/v1/tasks?service={svc['id']}")}


class SwarmLab:
    name = "swarm"
    sock = f"{RUN}/lab1/docker.sock"

    def init(self) -> None:
        lab("exec", "lab1", "docker", "swarm", "init", "--advertise-addr", addr("lab1"))

    def use(self, host: str) -> None:
        self.sock = f"{RUN}/{host}/docker.sock"
        self.host = host

    def managers(self) -> None:
        self.init()
        token = lab("exec", "lab1", "docker", "swarm", "join-token", "-q", "manager").strip()
        for h in ("lab2", "lab3"):
            lab("exec", h, "docker", "swarm", "join", "--token", token, f"{addr('lab1')}:2377")

    def leader(self) -> str:
        try:
            nodes = get(self.sock, "/nodes")
        except Exception:  # noqa: BLE001 - no quorum yet: Swarm answers with an error
            return ""
        for n in nodes if isinstance(nodes, list) else []:
            ms = n.get("ManagerStatus") or {}
            if ms.get("Leader") and n["Status"]["State"] != "down":
                return n["Description"]["Hostname"]
        return ""

    def scale(self, service: str, n: int) -> bool:
        return subprocess.run(["bash", LAB, "exec", self.host, "docker", "service", "scale", "-d", f"b_{service}={n}"],
                              capture_output=True, timeout=30).returncode == 0

    def cleanup(self) -> None:
        pass

    def join(self, host: str) -> float:
        token = lab("exec", "lab1", "docker", "swarm", "join-token", "-q", "worker").strip()
        t0 = mono()
        lab("exec", host, "docker", "swarm", "join", "--token", token, f"{addr('lab1')}:2377")
        t1 = until(lambda: self.node_state(host) == "ready", 30, f"{host} ready")
        return t1 - t0

    def node_state(self, host: str) -> str:
        for n in get(self.sock, "/nodes"):
            if n["Description"]["Hostname"] == host:
                return n["Status"]["State"]
        return ""

    def deploy(self, file: str, stack: str) -> None:
        lab("exec", "lab1", "docker", "stack", "deploy", "-c", file, stack)

    def create(self, name: str, replicas: int) -> None:
        lab("exec", "lab1", "docker", "service", "create", "-d", "--name", f"b_{name}", "--replicas", str(replicas),
            "--init", "--stop-grace-period", "1s", "shoal/busybox:latest", "sleep", "3600")

    def running(self, service: str, exclude_host: str = "") -> int:
        nodes = {n["ID"]: n for n in get(self.sock, "/nodes")}
        q = "/tasks?filters=" + json.dumps({"service": [f"b_{service}"]}).replace(" ", "")
        n = 0
        for t in get(self.sock, q):
            node = nodes.get(t.get("NodeID", ""))
            if (t["DesiredState"] == "running" and t["Status"]["State"] == "running" and node is not None
                    and node["Status"]["State"] == "ready" and node["Description"]["Hostname"] != exclude_host):
                n += 1
        return n

    def task_ids(self, service: str) -> set[str]:
        q = "/tasks?filters=" + json.dumps({"service": [f"b_{service}"]}).replace(" ", "")
        return {t["ID"] for t in get(self.sock, q)}


# -- the workloads --------------------------------------------------------------------------

def fresh_lab() -> None:
    lab("down", check=False)
    lab("up", "3", timeout=600)


def cluster(o) -> None:
    o.init()
    for h in ("lab2", "lab3"):
        o.join(h)


def run_join(o) -> dict[str, float]:
    fresh_lab()
    o.init()
    return {"join": statistics.median([o.join(h) for h in ("lab2", "lab3")])}


def run_deploy(o) -> dict[str, float]:
    fresh_lab()
    cluster(o)
    hosts = ["lab1", "lab2", "lab3"]
    t0 = mono()
    o.deploy(DEPLOY_STACK, "d")
    t1 = until(lambda: containers_running(hosts) >= 30, 300, "30 containers")
    return {"deploy: 30 tasks over 3 nodes": t1 - t0}


def run_nodeloss(o) -> dict[str, float]:
    fresh_lab()
    cluster(o)
    o.create("nl", 6)
    until(lambda: o.running("nl") == 6 and containers_running(["lab3"]) == 2, 120, "6 running, 2 on lab3")
    t0 = mono()
    lab("kill", "lab3")
    t_down = until(lambda: o.node_state("lab3") == "down", 120, "lab3 down")
    t_back = until(lambda: o.running("nl", exclude_host="lab3") == 6, 120, "6 running elsewhere")
    return {"down": t_down - t0, "back": t_back - t0}


def run_blip(o) -> dict[str, float]:
    fresh_lab()
    cluster(o)
    o.create("bl", 6)
    until(lambda: o.running("bl") == 6 and containers_running(["lab3"]) == 2, 120, "6 running, 2 on lab3")
    before = o.task_ids("bl")
    lab("cut", "lab3")
    time.sleep(3)
    lab("heal", "lab3")
    time.sleep(15)
    return {"blip: tasks rescheduled": float(len(o.task_ids("bl") - before))}


def run_failover(o) -> dict[str, float]:
    fresh_lab()
    try:
        o.managers()
        o.use("lab1")
        o.create("fo", 6)
        until(lambda: o.running("fo") == 6 and containers_running(["lab1"]) == 2, 120, "6 running, 2 on lab1")
        o.use("lab2")
        t0 = mono()
        lab("kill", "lab1")
        t_leader = until(lambda: o.leader() in ("lab2", "lab3"), 120, "a new leader")
        t_accepted = until(lambda: o.scale("fo", 8), 120, "the scale accepted")
        t_applied = until(lambda: o.running("fo", exclude_host="lab1") >= 6, 180, "6 running on lab2 and lab3")
        t_back = until(lambda: o.running("fo", exclude_host="lab1") >= 8, 180, "8 running on lab2 and lab3")
        return {"failover: leader": t_leader - t0, "failover: scale accepted": t_accepted - t0,
                "failover: scale applied": t_applied - t0, "failover: all back": t_back - t0}
    finally:
        o.cleanup()


WORKLOADS = {"join": run_join, "deploy": run_deploy, "nodeloss": run_nodeloss, "blip": run_blip,
             "failover": run_failover}


def fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", default=["all"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--shoal-store", choices=("own", "external"), default="own",
                    help="failover: Shoal's managers on etcd members they run (own) or on one etcd on the bridge")
    args = ap.parse_args()
    names = list(WORKLOADS) if "all" in args.workloads else args.workloads
    import fcntl
    lock = open(LAB_LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    results: dict[str, dict[str, list[float]]] = {"shoal": {}, "swarm": {}}
    load = os.getloadavg()[0]
    try:
        for name in names:
            for rep in range(args.reps):
                order = [ShoalLab(args.shoal_store), SwarmLab()] if rep % 2 == 0 else [SwarmLab(), ShoalLab(args.shoal_store)]
                for o in order:
                    figures = WORKLOADS[name](o)
                    for k, v in figures.items():
                        results[o.name].setdefault(k, []).append(v)
                    print(f"{name} rep {rep + 1} {o.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()),
                          flush=True)
    finally:
        lab("down", check=False)
        lock.close()
    lines = ["| figure | Shoal min / median / max | Swarm min / median / max | Shoal/Swarm | Swarm reference |",
             "|---|---|---|---|---|"]
    for key in sorted(set(results["shoal"]) | set(results["swarm"])):
        a, b = results["shoal"].get(key, []), results["swarm"].get(key, [])
        ratio = f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b and statistics.median(b) else "-"
        ref = REFERENCE.get(key)
        label = ref[0] if ref else key
        unit = "" if key.endswith("rescheduled") else " (s)"
        lines.append(f"| {label}{unit} | {fmt(a)} | {fmt(b)} | {ratio} | {ref[1] if ref else '-'} |")
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\n(load average at start {load:.2f}; {args.reps} reps; fresh lab of 3 hosts per rep)")
    if not args.no_record:
        cmd = "python3 bench/cluster.py " + " ".join(sys.argv[1:])
        with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
            f.write(f"\n## Cluster on three lab hosts — {time.strftime('%Y-%m-%d')}\n\n"
                    f"`{cmd}` (2-core machine, load average {load:.2f} at start; {args.reps} repetitions, "
                    f"Shoal and Swarm alternating, a fresh lab per repetition)\n\n{table}\n")


if __name__ == "__main__":
    main()
