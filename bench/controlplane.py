"""Control plane at scale: N simulated nodes, a stack of S services totalling T tasks (not a test).

    python3 bench/controlplane.py --nodes 100 --tasks 10000            # ~1 min
    python3 bench/controlplane.py --nodes 1000 --tasks 100000          # several minutes
    python3 bench/controlplane.py --nodes 10 --tasks 500 --services 10 # smoke, seconds

What it does, in order:
1. a fresh cluster in a temp data dir: `SHOAL_DATA_DIR=<tmp> SHOAL_NO_DATAPATH=1 shoal init
   --port <free port>` (a real daemon: manager + the host's real agent);
2. `bench/sim_agents.py` in a subprocess: N simulated nodes that join through the real join
   path (token, CSR, certificate signed by the manager; see that file), speaking the real
   agent protocol over mutual TLS; they report every assigned task as running, no containers;
3. deploys a stack of S services (image `busybox`, nothing starts) totalling T tasks, each
   constrained to `engine.labels.sim == true` so the host's real agent gets none. The deploy is
   what `shoal stack deploy -c FILE NAME` does — the compose file is loaded with Shoal's own
   loader and POSTed to `/v1/stacks/NAME` on the unix socket — done in-process so the clock
   does not include the start-up of a Python CLI;
4. measures: deploy → every task reported running (the manager acknowledged the last
   `running` report); placements/s = T / (deploy → the last task first delivered to its node
   in an assignment answer: placement plus dispatch); the manager daemon's peak RSS (VmHWM of
   the daemon pid, which also holds the host's agent), polled every 0.2 s; API latency p50/p99
   of `GET /v1/services` (service ls, every 0.25 s) and of a service update (a label change on
   the first service, `POST /v1/services/<id>/update`, every 1 s) while the deploy converges;
5. `shoal leave --force`, removes the temp dir.

`--profile DIR` also records the manager with py-spy (if installed) during the deploy.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

GOAL_PLACEMENTS = 4000.0
GOAL_MEM_MB = 500.0
REFERENCES = [
    ("HashiCorp Nomad C1M (published)", "1,000,000 containers on 5,000 nodes, ≈ 3,750 placements/s"),
    ("Kubernetes scheduler benchmark (published)", "5,000 nodes: 680–810 pods/s expected"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (0.0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def mem_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def write_compose(path: str, services: int, tasks: int) -> list[int]:
    per, extra = divmod(tasks, services)
    counts = [per + (1 if i < extra else 0) for i in range(services)]
    lines = ['version: "3.8"', "services:"]
    for i, n in enumerate(counts):
        lines += [f"  s{i:04d}:",
                  "    image: busybox",
                  '    command: ["sleep", "3600"]',
                  "    deploy:",
                  f"      replicas: {n}",
                  "      placement:",
                  '        constraints: ["engine.labels.sim == true"]']
    # The stack's network spans the cluster and every task takes an address on it (as in
    # Swarm): a subnet with room for every task and every node (Swarm's default /24 holds 254).
    prefix = 32 - max(8, (2 * tasks + 2048).bit_length())
    lines += ["networks:", "  default:", "    ipam:", "      config:", f"        - subnet: 10.64.0.0/{prefix}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return counts


class Api:
    def __init__(self, sock: str):
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock),
                                             timeout=aiohttp.ClientTimeout(total=300))

    async def call(self, method: str, path: str, body=None):
        async with self.session.request(method, "http://shoal" + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {data}")
            return data

    async def close(self) -> None:
        await self.session.close()


class Run:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="shoal-cp-")
        self.data = os.path.join(self.dir, "data")
        self.port = a.port or free_port()
        self.env = dict(os.environ, SHOAL_DATA_DIR=self.data, SHOAL_NO_DATAPATH="1")
        self.sim: Optional[subprocess.Popen] = None
        self.spy: Optional[subprocess.Popen] = None
        self.pid = 0
        self.res: dict = {}

    def shoal(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shoal", *args], env=self.env, check=check,
                              capture_output=True, text=True, timeout=timeout)

    def sim_stats(self) -> dict:
        try:
            with open(os.path.join(self.dir, "sim.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    async def main(self) -> dict:
        a = self.a
        t = time.time()
        store = []
        if a.store == "etcd":  # a fresh etcd member of its own (Debian's), the state in it
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            from etcd_server import EtcdServer
            self.etcd = EtcdServer(Path(self.dir, "etcd")).start()
            store = ["--store", f"etcd://127.0.0.1:{self.etcd.client_port}"]
        self.shoal("init", "--port", str(self.port), *store)
        self.pid = int(open(os.path.join(self.data, "shoal.pid")).read().strip())
        api = Api(os.path.join(self.data, "shoal.sock"))
        try:
            await self._until(lambda: api.call("GET", "/v1/info"), 60, "the manager answers")
            print(f"cluster up in {time.time() - t:.1f} s (daemon pid {self.pid}, port {self.port})", flush=True)
            self.sim = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "sim_agents.py"), "--data-dir", self.data,
                 "--nodes", str(a.nodes), "--port", str(self.port), "--stats", os.path.join(self.dir, "sim.json"),
                 "--cert-dir", os.path.join(self.dir, "sim-certs"), "--ramp", str(min(10.0, 1 + a.nodes / 200))],
                stdout=open(os.path.join(self.dir, "sim.log"), "w"), stderr=subprocess.STDOUT)
            t = time.time()
            while True:
                nodes = await api.call("GET", "/v1/nodes")
                if sum(1 for n in nodes if n["state"] == "ready") >= a.nodes + 1:
                    break
                if self.sim.poll() is not None or time.time() - t > 300:
                    raise RuntimeError(f"sim nodes did not register: {open(os.path.join(self.dir, 'sim.log')).read()[-2000:]}")
                await asyncio.sleep(0.5)
            print(f"{a.nodes} sim nodes joined and ready in {time.time() - t:.1f} s", flush=True)
            await asyncio.sleep(2)  # let registration writes settle
            rss0, _ = mem_kib(self.pid)
            compose = os.path.join(self.dir, "stack.yml")
            write_compose(compose, a.services, a.tasks)
            from shoal.compose import load_stack
            stack = load_stack([compose], "cp").model_dump(mode="json")
            return await self.measure(api, stack, rss0)
        finally:
            await api.close()

    async def _until(self, fn, timeout: float, what: str):
        t = time.time()
        while True:
            try:
                return await fn()
            except Exception:  # noqa: BLE001
                if time.time() - t > timeout:
                    raise RuntimeError(f"timed out waiting until {what}")
                await asyncio.sleep(0.2)

    async def measure(self, api: Api, stack: dict, rss0: int) -> dict:
        a = self.a
        T = a.tasks
        peak = {"hwm": 0, "rss": 0}
        done = asyncio.Event()

        async def mem_poll() -> None:
            while not done.is_set():
                rss, hwm = mem_kib(self.pid)
                peak["hwm"] = max(peak["hwm"], hwm)
                peak["rss"] = max(peak["rss"], rss)
                await asyncio.sleep(0.2)

        memt = asyncio.create_task(mem_poll())
        if a.profile and shutil.which("py-spy"):
            os.makedirs(a.profile, exist_ok=True)
            out = os.path.join(a.profile, f"manager-{a.nodes}n-{T}t.{a.profile_format}")
            self.spy = subprocess.Popen(["py-spy", "record", "-p", str(self.pid), "-o", out, "-r", "50",
                                         "-f", a.profile_format, "--nonblocking"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1)
        ls_lat: list[float] = []
        up_lat: list[float] = []
        up_err = 0
        cpu0 = cpu_seconds(self.pid)
        t0 = time.time()
        await api.call("POST", "/v1/stacks/cp", {"stack": stack, "prune": False})
        t_deploy_returned = time.time() - t0
        print(f"deploy POST returned in {t_deploy_returned:.2f} s", flush=True)
        first = None
        t_ls_all = None
        last_update = 0.0
        n = 0
        progress, progress_at = (-1, -1), time.time()
        while True:
            now = time.time()
            if now - t0 > a.timeout or now - progress_at > a.stall:
                print(f"giving up after {now - t0:.0f} s ({'timeout' if now - t0 > a.timeout else 'no progress'})",
                      flush=True)
                break
            s = time.perf_counter()
            svcs = await api.call("GET", "/v1/services")
            ls_lat.append(time.perf_counter() - s)
            running = sum(x["replicas_running"] for x in svcs if x["spec"]["name"].startswith("cp_"))
            if first is None:
                first = next(x for x in svcs if x["spec"]["name"] == "cp_s0000")
            if running >= T and t_ls_all is None:
                t_ls_all = time.time() - t0
            st = self.sim_stats()
            if (st.get("seen", 0), st.get("running", 0)) != progress:
                progress, progress_at = (st.get("seen", 0), st.get("running", 0)), time.time()
            n += 1
            if n % 8 == 0:
                print(f"  t+{time.time() - t0:6.1f}s  seen {st.get('seen', 0):>7}  running(sim) {st.get('running', 0):>7}"
                      f"  running(ls) {running:>7}  rss {mem_kib(self.pid)[0] / 1024:6.0f} MB  errors {st.get('errors', 0)}",
                      flush=True)
            if t_ls_all is not None and st.get("running", 0) >= T:
                break
            if time.time() - last_update >= 1.0:
                last_update = time.time()
                svc = await api.call("GET", f"/v1/services/{first['id']}")
                spec = svc["spec"]
                spec["labels"] = {**spec.get("labels", {}), "bench.probe": str(n)}
                s = time.perf_counter()
                try:
                    await api.call("POST", f"/v1/services/{first['id']}/update", {"spec": spec, "version": svc["version"]})
                    up_lat.append(time.perf_counter() - s)
                except RuntimeError:
                    up_err += 1  # a conflict with the orchestrator's own write: retried next second
            await asyncio.sleep(0.25)
        cpu_used = cpu_seconds(self.pid) - cpu0  # (the CLI's probes are in it: a few each second)
        st = self.sim_stats()
        # Endpoints reach the nodes after the tasks run (spaced out at scale): wait for one
        # node's table to hold every replica.
        t_table = None
        while time.time() - t0 < a.timeout:
            if self.sim_stats().get("table_backends", 0) >= T:
                t_table = time.time() - t0
                break
            await asyncio.sleep(0.25)
        # keep sampling a few seconds after convergence (steady state with T tasks)
        settle_ls: list[float] = []
        for _ in range(8):
            s = time.perf_counter()
            await api.call("GET", "/v1/services")
            settle_ls.append(time.perf_counter() - s)
            await asyncio.sleep(0.25)
        done.set()
        await memt
        rss_end, hwm_end = mem_kib(self.pid)
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            try:
                self.spy.wait(30)
            except subprocess.TimeoutExpired:
                self.spy.kill()
        converged = st.get("running", 0) >= T and t_ls_all is not None
        all_seen = st.get("seen", 0) >= T
        t_assigned = (st["last_seen_at"] - t0) if all_seen else None
        t_running = (st["last_running_at"] - t0) if converged else None
        return {
            "nodes": a.nodes, "services": a.services, "tasks": T,
            "converged": converged,
            "deploy_post_s": t_deploy_returned,
            "assigned_s": t_assigned,
            "placements_per_s": T / t_assigned if t_assigned else None,
            "running_s": t_running,
            "running_ls_s": t_ls_all,
            "rss_before_mb": rss0 / 1024,
            "peak_hwm_mb": max(peak["hwm"], hwm_end) / 1024,
            "rss_end_mb": rss_end / 1024,
            "manager_cpu_s": cpu_used,
            "ls_p50_ms": pct(ls_lat, 50) * 1000, "ls_p99_ms": pct(ls_lat, 99) * 1000, "ls_n": len(ls_lat),
            "ls_settled_p50_ms": pct(settle_ls, 50) * 1000,
            "upd_p50_ms": pct(up_lat, 50) * 1000, "upd_p99_ms": pct(up_lat, 99) * 1000, "upd_n": len(up_lat),
            "upd_conflicts": up_err,
            "sim_errors": st.get("errors", 0), "sim_last_error": st.get("last_error", ""),
            "sim_bytes_mb": st.get("bytes", 0) / 1e6, "sim_decoded_mb": st.get("decoded", 0) / 1e6, "sim_polls": st.get("polls", 0),
            "sim_pieces": (st.get("pieces_inflated", 0), st.get("pieces_skimmed", 0), st.get("answers_whole", 0)),
            "table_backends": self.sim_stats().get("table_backends", 0),
            "table_s": t_table,
        }

    def cleanup(self) -> None:
        if self.sim is not None and self.sim.poll() is None:
            self.sim.terminate()
            try:
                self.sim.wait(30)
            except subprocess.TimeoutExpired:
                self.sim.kill()
        if os.path.exists(os.path.join(self.data, "cluster.json")):
            try:
                r = self.shoal("leave", "--force", check=False, timeout=60)
                if r.returncode != 0:
                    print(f"leave --force failed: {r.stderr.strip()}", file=sys.stderr)
            except subprocess.TimeoutExpired:
                pass
        if self.pid:  # a daemon too busy to hear `leave` is not left running
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        if getattr(self, "etcd", None) is not None:
            self.etcd.stop()
        if not self.a.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def fmt(v, spec: str = ".1f", unit: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{unit}"


def report(r: dict) -> str:
    T, N = r["tasks"], r["nodes"]
    pl = r["placements_per_s"]
    mem_goal = "< 500 MB for 100,000 tasks on 1,000 nodes"
    rows = [
        ("deploy → all tasks running", fmt(r["running_s"], ".1f", " s"), "", ""),
        ("deploy → all assigned (delivered)", fmt(r["assigned_s"], ".1f", " s"), "", ""),
        ("deploy → a node's endpoint table full", fmt(r.get("table_s"), ".1f", " s"), "", ""),
        ("placements/s", fmt(pl, ",.0f"), "≥ 4,000/s", "" if pl is None else ("met" if pl >= GOAL_PLACEMENTS else "NOT met")),
        ("manager peak RSS (VmHWM)", fmt(r["peak_hwm_mb"], ".0f", " MB"), mem_goal,
         ("met" if r["peak_hwm_mb"] < GOAL_MEM_MB else "NOT met") if (N >= 1000 and T >= 100_000) else
         f"({'<' if r['peak_hwm_mb'] < GOAL_MEM_MB else '≥'} 500 MB)"),
        ("manager CPU, deploy → all running",
         f"{r['manager_cpu_s']:.1f} s, {1000 * r['manager_cpu_s'] / T:.2f} ms per task" if r.get("manager_cpu_s") else "—",
         "", ""),
        ("manager RSS before deploy / at end", f"{r['rss_before_mb']:.0f} / {r['rss_end_mb']:.0f} MB", "", ""),
        ("service ls p50 / p99 (during)", f"{r['ls_p50_ms']:.0f} / {r['ls_p99_ms']:.0f} ms (n={r['ls_n']})", "", ""),
        ("service ls p50 (converged)", f"{r['ls_settled_p50_ms']:.0f} ms", "", ""),
        ("service update p50 / p99 (during)", f"{r['upd_p50_ms']:.0f} / {r['upd_p99_ms']:.0f} ms (n={r['upd_n']})", "", ""),
    ]
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    w2 = max(len(x[2]) for x in rows)
    out = [f"Control plane: {N} sim nodes, {r['services']} services, {T} tasks"
           f"{'' if r['converged'] else '  (DID NOT CONVERGE before --timeout)'}",
           f"{'measure':<{w0}}  {'Shoal':<{w1}}  {'goal':<{w2}}  "]
    out += [f"{a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}" for a, b, c, d in rows]
    out.append("references (published figures, not measured here):")
    out += [f"  {a}: {b}" for a, b in REFERENCES]
    out.append(f"(deploy POST returned after {r['deploy_post_s']:.2f} s; service ls confirmed all running at "
               f"{fmt(r['running_ls_s'], '.1f', ' s')}; update conflicts {r['upd_conflicts']}; sim: "
               f"{r['sim_polls']} assignment answers, {r['sim_bytes_mb']:.0f} MB received ({r['sim_decoded_mb']:.0f} MB decoded), {r['sim_errors']} errors; "
               f"one node's endpoint table: {r.get('table_backends', 0)} of {T} replicas; shared pieces "
               f"inflated / read as remembered / answers inflated whole: {' / '.join(map(str, r.get('sim_pieces', ())))}"
               f"{(' — last: ' + r['sim_last_error']) if r['sim_errors'] else ''})")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds the deploy may take to converge")
    ap.add_argument("--stall", type=float, default=120.0, help="give up after this long without progress")
    ap.add_argument("--port", type=int, default=0, help="manager port (default: a free one)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, sim stats)")
    ap.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite",
                    help="the manager's store: its SQLite file, or a fresh etcd member (Debian's etcd)")
    ap.add_argument("--profile", default=None, help="py-spy record the manager into this dir")
    ap.add_argument("--profile-format", default="speedscope", choices=["speedscope", "flamegraph", "raw"])
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--reps", type=int, default=1, help="repetitions (each on a fresh cluster); > 1 prints min/median/max")
    a = ap.parse_args()
    a.services = max(1, min(a.services, a.tasks))
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"{platform.platform()}, Python {platform.python_version()}", flush=True)
    results = []

    def stop(signum, frame):  # `timeout` or kill: still stop the daemon and the sim nodes
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    for rep in range(a.reps):
        if a.reps > 1:
            print(f"--- repetition {rep + 1} of {a.reps}", flush=True)
        run = Run(a)
        try:
            r = asyncio.run(run.main())
        finally:
            run.cleanup()
        print(report(r), flush=True)
        results.append(r)
    if a.reps > 1:
        print(summary(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results if a.reps > 1 else results[0], f, indent=2)


SUMMARY = [
    ("deploy → all tasks running (s)", "running_s", ".1f"),
    ("deploy → all assigned (s)", "assigned_s", ".1f"),
    ("deploy → a node's endpoint table full (s)", "table_s", ".1f"),
    ("placements/s", "placements_per_s", ",.0f"),
    ("manager peak RSS (MB)", "peak_hwm_mb", ".0f"),
    ("manager CPU, deploy → all running (s)", "manager_cpu_s", ".1f"),
    ("service ls p50 during (ms)", "ls_p50_ms", ".0f"),
    ("service ls p99 during (ms)", "ls_p99_ms", ".0f"),
    ("service update p50 during (ms)", "upd_p50_ms", ".0f"),
    ("service update p99 during (ms)", "upd_p99_ms", ".0f"),
]


def summary(results: list[dict]) -> str:
    """min / median / max of each figure over the repetitions."""
    import statistics
    r0 = results[0]
    out = [f"Control plane, {len(results)} repetitions: {r0['nodes']} sim nodes, {r0['services']} services, "
           f"{r0['tasks']} tasks ({sum(1 for r in results if r['converged'])} converged)",
           f"{'measure':<44}{'min':>10}{'median':>10}{'max':>10}"]
    for label, key, spec in SUMMARY:
        xs = [r[key] for r in results if r.get(key) is not None and r[key] == r[key]]
        if not xs:
            out.append(f"{label:<44}{'—':>10}{'—':>10}{'—':>10}")
            continue
        out.append(f"{label:<44}{min(xs):>10{spec}}{statistics.median(xs):>10{spec}}{max(xs):>10{spec}}")
    pl = [r["placements_per_s"] for r in results if r.get("placements_per_s")]
    mem = [r["peak_hwm_mb"] for r in results]
    big = r0["nodes"] >= 1000 and r0["tasks"] >= 100_000
    out.append(f"goal ≥ {GOAL_PLACEMENTS:,.0f} placements/s: median {'met' if pl and statistics.median(pl) >= GOAL_PLACEMENTS else 'NOT met'}"
               f"; goal < {GOAL_MEM_MB:.0f} MB for 100,000 tasks on 1,000 nodes: "
               + (f"worst {'met' if max(mem) < GOAL_MEM_MB else 'NOT met'}" if big else "(not this size)"))
    out.append("references (published figures, not measured here):")
    out += [f"  {a}: {b}" for a, b in REFERENCES]
    return "\n".join(out)


if __name__ == "__main__":
    main()
