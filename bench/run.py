"""Shoal side by side with Docker Swarm mode on the same Docker Engine.

    python3 bench/run.py deploy|scale|heal|update|mesh|footprint|floor|all [more...]
                         [--reps 5] [--only shoal|swarm] [--no-record]

Each benchmark runs both orchestrators in the same run, repetitions interleaved
(odd reps Shoal first, even reps Swarm first), and prints min / median / max per
orchestrator and the ratio of the medians (Shoal/Swarm), beside the median the
reference document measured for Swarm. Results are appended to bench/RESULTS.md.
See bench/README.md for what each figure measures.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (BENCH_DIR, STACK_LABEL, STACKS, BenchError, Engine, Orchestrator, Report,  # noqa: E402
                     Shoal, Swarm, Unavailable, descendants, sh, vmrss_kib, wait_until, write_results)

mono = time.monotonic
IMAGE = "shoal/busybox:latest"
FLOOR_LABEL = "shoal.bench"
FLOOR_VALUE = "floor"
NODE_LOCK = "/tmp/shoal-node.lock"  # one Shoal cluster (datapath owner) per machine at a time
ORDER = ["floor", "mesh", "footprint", "deploy", "scale", "heal", "update"]


def stack_file(name: str) -> str:
    return os.path.join(STACKS, f"{name}.yml")


class Ctx:
    def __init__(self, args):
        self.args = args
        self.reps = args.reps
        self.timeout = args.timeout
        self.engine = Engine()
        self.swarm = Swarm(self.engine)
        self.shoal = Shoal(self.engine, args.data_dir, args.port)
        self.wanted = [o for o in (self.shoal, self.swarm) if o.name in args.only]
        self.floor: dict[int, float] = {}  # parallelism -> median create+start seconds (this run)
        self.dockerd_before_swarm: list[int] = []

    # The node's Shoal datapath has one owner at a time: Shoal's integration tests and
    # this harness take turns on NODE_LOCK (held while our Shoal daemon or
    # bench/mesh_throughput.py runs, released between benchmarks).
    _lock = None

    def lock_node(self) -> None:
        if self._lock is not None:
            return
        f = open(NODE_LOCK, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Queue in the kernel like the tests' blocking flock (polling would always lose
            # the race to them), with SIGALRM as the time limit.
            print(f"waiting for {NODE_LOCK} (another Shoal cluster uses this node's datapath)", flush=True)

            class _Late(Exception):
                pass

            def late(signum, frame):
                raise _Late

            old = signal.signal(signal.SIGALRM, late)
            signal.setitimer(signal.ITIMER_REAL, self.args.lock_timeout)
            try:
                fcntl.flock(f, fcntl.LOCK_EX)
            except _Late:
                f.close()
                raise Unavailable(f"{NODE_LOCK} still held by another Shoal cluster after "
                                  f"{self.args.lock_timeout:.0f} s")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        self._lock = f

    def unlock_node(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # orchestrators are set up lazily; Swarm once per run, Shoal once per benchmark
    def ready(self, o: Orchestrator) -> bool:
        if o not in self.wanted:
            return False
        if o.unavailable is not None:
            return False
        if getattr(o, "_set_up", False):
            return True
        try:
            if o is self.shoal:
                self.lock_node()
            o.setup()
            o._set_up = True
        except (Unavailable, BenchError) as e:
            o.unavailable = str(e)
            print(f"{o.name}: not available ({e})", flush=True)
            if o is self.shoal:
                self.unlock_node()
            return False
        return True

    def end_bench(self) -> None:
        """After each benchmark: Shoal leaves (if we made it) and the node lock is released."""
        if getattr(self.shoal, "_set_up", False):
            try:
                self.shoal.teardown()
            except Exception as e:  # noqa: BLE001
                print(f"shoal: teardown: {e}", file=sys.stderr)
            self.shoal._set_up = False
        self.unlock_node()

    def teardown(self) -> None:
        self.end_bench()
        if getattr(self.swarm, "_set_up", False) or self.swarm.started_by_us:
            try:
                self.swarm.teardown()
            except Exception as e:  # noqa: BLE001
                print(f"swarm: teardown: {e}", file=sys.stderr)

    def each_rep(self, report: Report, setup, one, teardown=None) -> None:
        """setup(o) once per orchestrator, one(o, i) per rep (interleaved), teardown(o) at the end."""
        live = []
        for o in (self.shoal, self.swarm):
            if o not in self.wanted:
                report.mark(o.name, "not run (--only)")
            elif not self.ready(o):
                report.mark(o.name, o.unavailable or "?")
            else:
                try:
                    if setup:
                        setup(o)
                    live.append(o)
                except BenchError as e:
                    report.mark(o.name, str(e))
                    print(f"{o.name}: {report.title}: setup failed: {e}", flush=True)
                    self.best_effort_cleanup(o)
        failed: dict[str, str] = {}
        for i in range(self.reps):
            for o in (live if i % 2 == 0 else live[::-1]):
                if o.name in failed:
                    continue
                try:
                    one(o, i)
                    print(f"  rep {i + 1}/{self.reps} {o.name:<5} "
                          + "  ".join(f"{r.measure.split(' (')[0]}={r.last(o.name)}" for r in report.rows
                                      if r.samples.get(o.name)), flush=True)
                except BenchError as e:
                    failed[o.name] = str(e)
                    report.mark(o.name, str(e))
                    report.notes.append(f"{o.name}: rep {i + 1} failed: {e}")
                    print(f"  rep {i + 1}/{self.reps} {o.name}: FAILED: {e}", flush=True)
                    self.best_effort_cleanup(o)
        for o in live:
            if teardown and o.name not in failed:
                try:
                    teardown(o)
                except BenchError as e:
                    report.notes.append(f"{o.name}: teardown: {e}")
            self.best_effort_cleanup(o)

    def best_effort_cleanup(self, o: Orchestrator) -> None:
        for stack in list(o.deployed):
            try:
                o.rm_and_wait(stack, timeout=120)
            except BenchError as e:
                print(f"{o.name}: cleanup of {stack}: {e}", file=sys.stderr)


# --------------------------------------------------------------------------- deploy

def bench_deploy(ctx: Ctx) -> Report:
    rep = Report("deploy — 10 services × 3 replicas (30 tasks), then stack rm",
                 "From the start of `stack deploy -c bench/stacks/deploy.yml` until the engine runs 30 "
                 "containers labelled with the stack; then from the start of `stack rm` until no container "
                 "of the stack exists (running or not).", ctx.reps)
    r_cmd = rep.row("deploy command returns")
    r_run = rep.row("deploy → 30 running", doc="8.97 s")
    r_rm = rep.row("stack rm → 0 containers", doc="9.19 s")
    f = stack_file("deploy")

    def one(o: Orchestrator, i: int) -> None:
        stack = o.stack_name("deploy")
        if o.existing(stack):
            o.rm_and_wait(stack)
        o.deployed.add(stack)
        t0 = mono()
        o.deploy(f, stack)
        t1 = mono()
        t2 = wait_until(lambda: o.running(stack) >= 30, ctx.timeout, f"{o.name}: 30 running")
        r_cmd.add(o.name, t1 - t0)
        r_run.add(o.name, t2 - t0)
        time.sleep(1)
        t0 = mono()
        o.rm(stack)
        t2 = wait_until(lambda: o.existing(stack) == 0, ctx.timeout, f"{o.name}: containers gone")
        r_rm.add(o.name, t2 - t0)
        o.deployed.discard(stack)
        if not o.wait_networks_gone(stack):
            rep.notes.append(f"{o.name}: networks of the stack still there 30 s after its containers were gone")

    ctx.each_rep(rep, None, one)
    floor_note(ctx, rep)
    return rep


def floor_note(ctx: Ctx, rep: Report) -> None:
    if ctx.floor:
        rep.notes.append("engine floor in this run (create+start 30 containers, median): "
                         + ", ".join(f"{v:.2f} s at parallelism {p}" for p, v in sorted(ctx.floor.items())))


# --------------------------------------------------------------------------- scale

def bench_scale(ctx: Ctx) -> Report:
    rep = Report("scale — one service 1 → 50 → 0 replicas",
                 "`service scale S=50` from 1 running until the engine runs 50 containers of the stack, "
                 "then `service scale S=0` until none runs (the command's time included). "
                 "Between reps the service goes back to 1 (not timed).", ctx.reps)
    r_up = rep.row("scale 1 → 50 running", doc="16.7 s")
    r_down = rep.row("scale 50 → 0 running")

    def setup(o: Orchestrator) -> None:
        o.deploy_and_wait("scale", stack_file("scale"), 1, ctx.timeout)

    def one(o: Orchestrator, i: int) -> None:
        stack = o.stack_name("scale")
        svc = o.svc(stack, "app")
        t0 = mono()
        o.scale(svc, 50)
        r_up.add(o.name, wait_until(lambda: o.running(stack) >= 50, ctx.timeout, f"{o.name}: 50 running") - t0)
        t0 = mono()
        o.scale(svc, 0)
        r_down.add(o.name, wait_until(lambda: o.running(stack) == 0, ctx.timeout, f"{o.name}: 0 running") - t0)
        o.scale(svc, 1)
        wait_until(lambda: o.running(stack) == 1, ctx.timeout, f"{o.name}: back to 1 running")

    ctx.each_rep(rep, setup, one)
    return rep


# --------------------------------------------------------------------------- heal

def bench_heal(ctx: Ctx) -> Report:
    rep = Report("self-healing — a replica's container killed",
                 "`docker kill` (SIGKILL) of the only container of a 1-replica service, until the engine "
                 "runs a replacement container of that service. Two services: restart_policy delay 0s, "
                 "and the default policy (delay 5s).", ctx.reps)
    r_fast = rep.row("replacement running, delay 0s", doc="0.76 s")
    r_def = rep.row("replacement running, default delay", doc="5.68 s")

    def setup(o: Orchestrator) -> None:
        o.deploy_and_wait("heal", stack_file("heal"), 2, ctx.timeout)

    def one(o: Orchestrator, i: int) -> None:
        stack = o.stack_name("heal")
        for name, row in (("fast", r_fast), ("default", r_def)):
            svc = o.svc(stack, name)
            cs = o.running_of(svc)
            if len(cs) != 1:
                wait_until(lambda: len(o.running_of(svc)) == 1, 60, f"{o.name}: one running container of {svc}")
                cs = o.running_of(svc)
            victim = cs[0]["Id"]
            t0 = mono()
            ctx.engine.kill(victim)
            t1 = wait_until(lambda: any(c["Id"] != victim for c in o.running_of(svc)), ctx.timeout,
                            f"{o.name}: replacement of {svc}")
            row.add(o.name, t1 - t0)
            time.sleep(0.5)

    ctx.each_rep(rep, setup, one)
    return rep


# --------------------------------------------------------------------------- update

def bench_update(ctx: Ctx) -> Report:
    rep = Report("rolling update — 6 replicas, parallelism 2, delay 0s",
                 "`service update --env-add BENCH_REV=<new>` until the engine runs exactly 6 containers of "
                 "the service and every one has the new variable (engine view, each new container inspected "
                 "once); the orchestrator's own view is the time its update status says `completed` "
                 "(its CompletedAt minus the start of the command).", ctx.reps)
    r_cmd = rep.row("update command returns")
    r_eng = rep.row("all 6 running new spec (engine)", doc="12.65 s")
    r_orch = rep.row("update status completed (orch.)")

    def setup(o: Orchestrator) -> None:
        o.deploy_and_wait("update", stack_file("update"), 6, ctx.timeout)

    def one(o: Orchestrator, i: int) -> None:
        stack = o.stack_name("update")
        svc = o.svc(stack, "app")
        rev = f"{i + 1}.{int(time.time())}"
        want = f"BENCH_REV={rev}"
        seen: dict[str, bool] = {}

        def done() -> bool:
            cs = o.running_of(svc)
            if len(cs) != 6:
                return False
            for c in cs:
                if c["Id"] not in seen:
                    try:
                        env = ctx.engine.inspect(c["Id"])["Config"].get("Env") or []
                    except BenchError:
                        return False
                    seen[c["Id"]] = want in env
            return all(seen[c["Id"]] for c in cs)

        wall0, t0 = time.time(), mono()
        o.update_env(svc, "BENCH_REV", rev)
        t1 = mono()
        t2 = wait_until(done, ctx.timeout, f"{o.name}: 6 containers with {want}")
        r_cmd.add(o.name, t1 - t0)
        r_eng.add(o.name, t2 - t0)
        deadline = mono() + 120
        while True:
            at = o.update_completed_at(svc)
            if at is not None and at >= wall0:
                r_orch.add(o.name, at - wall0)
                break
            if mono() > deadline:
                r_orch.note.setdefault(o.name, "update status never said completed within 120 s")
                break
            time.sleep(0.5)

    ctx.each_rep(rep, setup, one)
    return rep


# --------------------------------------------------------------------------- mesh

def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


def wrk_rps(url: str, duration: int, conns: int, threads: int) -> float:
    p = sh(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", url], timeout=duration + 60)
    m = re.search(r"Requests/sec:\s*([\d.]+)", p.stdout)
    if not m:
        raise BenchError(f"cannot parse wrk output: {p.stdout[-300:]}")
    errs = re.findall(r"(Non-2xx or 3xx responses: \d+|Socket errors: [^\n]*)", p.stdout)
    return float(m.group(1)), "; ".join(errs)


def ensure_wrk() -> None:
    if not shutil_which("wrk"):
        print("wrk missing: apt-get install -y wrk", flush=True)
        sh(["apt-get", "install", "-y", "wrk"], timeout=600)


def shutil_which(x: str):
    import shutil
    return shutil.which(x)


def direct_url(engine: Engine, cid: str, within: float = 15.0) -> str | None:
    """The first of the replica's addresses that answers from the host, tried for `within`
    seconds (a replica that has just started may not answer at once)."""
    deadline = mono() + within
    while True:
        nets = engine.inspect(cid)["NetworkSettings"]["Networks"]
        for name, n in nets.items():
            ip = n.get("IPAddress")
            if ip and http_ok(f"http://{ip}/", 1.0):
                return f"http://{ip}/"
        if mono() >= deadline:
            return None
        time.sleep(1)


def bench_mesh(ctx: Ctx) -> Report:
    a = ctx.args
    rep = Report("published-port throughput — routing mesh vs a replica directly",
                 f"Stack rows: bench/stacks/mesh.yml (2 nginx replicas, shoal/nginx, published 18089:80) deployed by "
                 f"each orchestrator; wrk -t{a.wrk_threads} -c{a.wrk_connections} -d{a.wrk_duration}s against "
                 "http://127.0.0.1:18089/ and against one replica's own address, alternating; req/s. "
                 "Script rows: `bench/mesh_throughput.py` (Shoal's datapath applied without the daemon; "
                 "the same wrk settings), Shoal only.", ctx.reps)
    r_mesh = rep.row("stack: req/s via published port", unit="req/s", prec=0)
    r_dir = rep.row("stack: req/s straight to a replica", unit="req/s", prec=0)
    r_rat = rep.row("stack: mesh / direct (per rep)", unit="", prec=2)
    s_mesh = rep.row("script: req/s via published port", unit="req/s", prec=0)
    s_dir = rep.row("script: req/s straight to a replica", unit="req/s", prec=0)
    for r in (s_mesh, s_dir):
        r.note["swarm"] = "—"
    ensure_wrk()

    def measure(o: Orchestrator, mesh_url: str, direct: str) -> None:
        for i in range(ctx.reps):
            m, me = wrk_rps(mesh_url, a.wrk_duration, a.wrk_connections, a.wrk_threads)
            d, de = wrk_rps(direct, a.wrk_duration, a.wrk_connections, a.wrk_threads)
            for what, e in (("published port", me), ("direct", de)):
                if e:
                    rep.notes.append(f"{o.name} rep {i + 1} {what}: wrk reported {e}")
            r_mesh.add(o.name, m)
            r_dir.add(o.name, d)
            r_rat.add(o.name, m / d)
            print(f"  rep {i + 1}/{ctx.reps} {o.name:<5} mesh={m:.0f} direct={d:.0f} req/s", flush=True)

    def e2e(o: Orchestrator) -> None:
        """Deploy the mesh stack, probe the published port, wrk it if it answers."""
        stack = o.deploy_and_wait("mesh", stack_file("mesh"), 2, ctx.timeout)
        try:
            url = "http://127.0.0.1:18089/"
            deadline = mono() + 15
            while not http_ok(url) and mono() < deadline:
                time.sleep(1)
            if not http_ok(url):
                ipvs = os.path.exists("/proc/net/ip_vs")
                why = "cannot run: no IPVS in this kernel" if not ipvs else "cannot run: the port does not answer"
                for r in (r_mesh, r_dir, r_rat):
                    r.note[o.name] = why
                rep.notes.append(f"{o.name}: {why} — 127.0.0.1:18089 did not answer within 15 s of both "
                                 f"replicas running (/proc/net/ip_vs {'exists' if ipvs else 'absent'})")
                print(f"{o.name}: {why}", flush=True)
                return
            cs = ctx.engine.running(f"{STACK_LABEL}={stack}")
            direct = direct_url(ctx.engine, cs[0]["Id"])
            if direct is None:
                for r in (r_mesh, r_dir, r_rat):
                    r.note[o.name] = "no address of a replica answers from the host"
                rep.notes.append(f"{o.name}: replica {cs[0]['Id'][:12]} answered on none of its addresses "
                                 f"within 15 s, though the published port did")
                return
            measure(o, url, direct)
        finally:
            o.rm_and_wait(stack, ctx.timeout)

    # Shoal's datapath alone, by bench/mesh_throughput.py (it must not run next to a live agent).
    script = os.path.join(BENCH_DIR, "mesh_throughput.py")
    if ctx.shoal not in ctx.wanted:
        pass
    elif not os.path.exists(script):
        s_mesh.note["shoal"] = s_dir.note["shoal"] = "bench/mesh_throughput.py is missing"
    elif ctx.shoal.daemon_running():
        s_mesh.note["shoal"] = s_dir.note["shoal"] = "skipped: a Shoal daemon runs (the script takes over its datapath)"
    elif ctx.engine.containers(["shoal.test=datapath"], all=True):
        s_mesh.note["shoal"] = s_dir.note["shoal"] = "skipped: its containers exist (someone else runs it)"
    else:
        cmd = [sys.executable, script, "--reps", str(ctx.reps), "--duration", str(a.wrk_duration),
               "--connections", str(a.wrk_connections), "--threads", str(a.wrk_threads)]
        try:
            ctx.lock_node()
            print("shoal: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                               env={**os.environ, "SHOAL_NODE_LOCK_HELD": "1"})
        except Unavailable as e:
            p = subprocess.CompletedProcess(cmd, 1, "", str(e))
        finally:
            ctx.unlock_node()
        table, mesh_v, direct_v = parse_mesh_script(p.stdout)
        if p.returncode != 0 or mesh_v is None or direct_v is None:
            err = (p.stderr.strip() or p.stdout.strip()).splitlines()
            s_mesh.note["shoal"] = s_dir.note["shoal"] = \
                f"bench/mesh_throughput.py failed: {err[-1] if err else p.returncode}"
        else:
            s_mesh.samples["shoal"] = list(mesh_v)
            s_dir.samples["shoal"] = list(direct_v)
            rep.extra = table

    for o in (ctx.shoal, ctx.swarm):
        if not ctx.ready(o):
            rep.mark(o.name, o.unavailable or "not run (--only)")
            continue
        try:
            e2e(o)
        except BenchError as e:
            for r in (r_mesh, r_dir, r_rat):
                r.note.setdefault(o.name, str(e))
            rep.notes.append(f"{o.name}: stack measurement stopped: {e}")
            print(f"{o.name}: FAILED: {e}", flush=True)
            ctx.best_effort_cleanup(o)
    if rep.extra:
        rep.notes.append("script rows: min / median / max as printed by bench/mesh_throughput.py; its table:")
    return rep


def parse_mesh_script(out: str):
    """The final table of bench/mesh_throughput.py: target, min, median, max, ratio-to-direct."""
    rx = re.compile(r"^(\S.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x")
    mesh = direct = None
    table = []
    lines = out.splitlines()
    for k, line in enumerate(lines):
        if line.startswith("target"):
            table = lines[max(0, k - 1):]
    for line in table:
        m = rx.match(line)
        if not m:
            continue
        vals = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
        name = m.group(1).strip()
        if name.startswith("mesh") and mesh is None:
            mesh = vals
        elif name.startswith("direct") and direct is None:
            direct = vals
    return [ln for ln in table if ln.strip()], mesh, direct


# --------------------------------------------------------------------------- footprint

def dockerd_pid() -> int:
    try:
        with open("/var/run/docker.pid") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pass
    p = sh(["pidof", "dockerd"], check=False).stdout.split()
    if len(p) != 1:
        raise BenchError("cannot tell which dockerd serves /var/run/docker.sock")
    return int(p[0])


def bench_footprint(ctx: Ctx) -> Report:
    rep = Report("footprint — resident memory (VmRSS)",
                 "VmRSS from /proc/<pid>/status, sampled once a second (one sample per rep). Shoal: its "
                 "daemon (manager + agent, the pid in $SHOAL_DATA_DIR/shoal.pid). Swarm lives inside dockerd, "
                 "so its column is dockerd. 'idle' = nothing deployed by either (Shoal: just after its `init` "
                 "for this benchmark); 'with 30 tasks' = bench/stacks/deploy.yml deployed on that "
                 "orchestrator only and converged (+3 s).", ctx.reps)
    MiB = 1024.0
    r_idle = rep.row("orchestrator RSS idle (Shoal daemon; dockerd)", unit="MiB", prec=1, doc="≈108 MiB")
    r_30 = rep.row("orchestrator RSS, 30 tasks (Shoal daemon; dockerd)", unit="MiB", prec=1)
    r_d30 = rep.row("dockerd RSS, 30 tasks of that orchestrator", unit="MiB", prec=1)
    r_tot = rep.row("total, 30 tasks (Shoal daemon + dockerd; dockerd)", unit="MiB", prec=1)
    dpid = dockerd_pid()
    if ctx.dockerd_before_swarm:
        v = ctx.dockerd_before_swarm
        rep.notes.append(f"dockerd before `docker swarm init` in this run: {min(v) / MiB:.1f} / "
                         f"{sorted(v)[len(v) // 2] / MiB:.1f} / {max(v) / MiB:.1f} MiB")

    live = []
    for o in (ctx.shoal, ctx.swarm):
        if ctx.ready(o):
            live.append(o)
        else:
            rep.mark(o.name, o.unavailable or "not run (--only)")

    def pid_of(o: Orchestrator) -> int:
        if o is ctx.swarm:
            return dpid
        p = ctx.shoal.pid()
        if p is None:
            raise BenchError("no live pid in shoal.pid")
        return p

    kids: set[int] = set()
    # idle: nothing deployed by either
    for i in range(ctx.reps):
        for o in live:
            try:
                r_idle.add(o.name, vmrss_kib(pid_of(o)) / MiB)
                if o is ctx.shoal:
                    kids.update(descendants(pid_of(o)))
            except (BenchError, OSError) as e:
                r_idle.note.setdefault(o.name, str(e))
        time.sleep(1)
    # 30 tasks, one orchestrator at a time
    for o in live:
        try:
            stack = o.deploy_and_wait("footprint", stack_file("deploy"), 30, ctx.timeout)
            time.sleep(3)
            for i in range(ctx.reps):
                mine, d = vmrss_kib(pid_of(o)), vmrss_kib(dpid)
                r_30.add(o.name, mine / MiB)
                r_d30.add(o.name, d / MiB)
                r_tot.add(o.name, (mine + d) / MiB if o is ctx.shoal else d / MiB)
                if o is ctx.shoal:
                    kids.update(descendants(pid_of(o)))
                time.sleep(1)
            o.rm_and_wait(stack, ctx.timeout)
        except (BenchError, OSError) as e:
            for r in (r_30, r_d30, r_tot):
                r.note.setdefault(o.name, str(e))
            ctx.best_effort_cleanup(o)
    if kids:
        rep.notes.append(f"the Shoal daemon had {len(kids)} child process(es) (not counted): {sorted(kids)}")
    return rep


# --------------------------------------------------------------------------- floor

def floor_cleanup(engine: Engine) -> None:
    for c in engine.containers([f"{FLOOR_LABEL}={FLOOR_VALUE}"], all=True):
        engine.remove(c["Id"], force=True)


def bench_floor(ctx: Ctx) -> Report:
    n = 30
    pars = [int(x) for x in ctx.args.parallel.split(",") if x]
    rep = Report(f"engine floor — {n} containers straight through the engine API",
                 f"POST /containers/create + /start for {n} busybox `sleep 3600` containers (HostConfig.Init, "
                 f"default bridge, label {FLOOR_LABEL}={FLOOR_VALUE}) with N requests in flight, until the last "
                 "start returns; then POST /stop + DELETE for all of them with the same parallelism. "
                 "No orchestrator involved: what both orchestrators are compared against.",
                 ctx.reps, cols=("engine",))
    body = {"Image": IMAGE, "Cmd": ["sleep", "3600"], "Labels": {FLOOR_LABEL: FLOOR_VALUE},
            "HostConfig": {"Init": True}}
    eng = ctx.engine
    rows = {p: (rep.row(f"create+start {n}, parallelism {p}",
                        doc={1: "7.7 s"}.get(p, "3.8–4.3 s (4–8 in parallel)" if p in (4, 8) else "")),
                rep.row(f"stop+remove {n}, parallelism {p}")) for p in pars}
    floor_cleanup(eng)
    try:
        for i in range(ctx.reps):
            for p in (pars if i % 2 == 0 else pars[::-1]):
                def up(k: int) -> str:
                    cid = eng.create(f"benchfloor-{k}", body)
                    eng.start(cid)
                    return cid

                def down(cid: str) -> None:
                    eng.stop(cid, 10)
                    eng.remove(cid)

                t0 = mono()
                with ThreadPoolExecutor(p) as ex:
                    ids = list(ex.map(up, range(n)))
                t1 = mono()
                if eng.count_running(f"{FLOOR_LABEL}={FLOOR_VALUE}") != n:
                    raise BenchError("not every floor container is running")
                with ThreadPoolExecutor(p) as ex:
                    list(ex.map(down, ids))
                t2 = mono()
                rows[p][0].add("engine", t1 - t0)
                rows[p][1].add("engine", t2 - t1)
                print(f"  rep {i + 1}/{ctx.reps} parallelism {p:>2}: up {t1 - t0:.2f} s, "
                      f"down {t2 - t1:.2f} s", flush=True)
    except BenchError as e:
        rep.notes.append(f"failed: {e}")
    finally:
        floor_cleanup(eng)
    for p, (up_row, _) in rows.items():
        if up_row.samples["engine"]:
            ctx.floor[p] = sorted(up_row.samples["engine"])[len(up_row.samples["engine"]) // 2]
    return rep


BENCHES = {"deploy": bench_deploy, "scale": bench_scale, "heal": bench_heal, "update": bench_update,
           "mesh": bench_mesh, "footprint": bench_footprint, "floor": bench_floor}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="+", choices=[*ORDER, "all"])
    ap.add_argument("--reps", type=int, default=5, help="repetitions per measure (default 5)")
    ap.add_argument("--only", default="shoal,swarm", help="orchestrators to run (default shoal,swarm)")
    ap.add_argument("--data-dir", default=os.environ.get("SHOAL_BENCH_DATA_DIR", "/tmp/shoal-bench"),
                    help="Shoal data dir (default /tmp/shoal-bench)")
    ap.add_argument("--port", type=int, default=4399, help="Shoal manager port (default 4399)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds any one wait may take")
    ap.add_argument("--parallel", default="1,4,8,30", help="floor: parallelisms (default 1,4,8,30)")
    ap.add_argument("--wrk-duration", type=int, default=5)
    ap.add_argument("--wrk-connections", type=int, default=32)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--lock-timeout", type=float, default=1800,
                    help=f"seconds to wait for {NODE_LOCK} (default 1800)")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    names = ORDER if "all" in args.bench else [b for b in ORDER if b in args.bench]
    command = "python3 bench/run.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (background job)
    ctx = Ctx(args)
    started = mono()
    reports: list[Report] = []
    interrupted = False
    try:
        if any(b != "floor" for b in names) and ctx.swarm in ctx.wanted:
            if ctx.swarm.state() == "inactive":
                try:
                    dp = dockerd_pid()
                    for _ in range(3):
                        ctx.dockerd_before_swarm.append(vmrss_kib(dp))
                        time.sleep(0.3)
                except (BenchError, OSError):
                    pass
            ctx.ready(ctx.swarm)
        for b in names:
            print(f"\n### {b}", flush=True)
            try:
                r = BENCHES[b](ctx)
            finally:
                ctx.end_bench()
            r.print()
            reports.append(r)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", file=sys.stderr, flush=True)
    finally:
        ctx.teardown()
        floor_cleanup(ctx.engine)
    if reports and not args.no_record:
        if interrupted:
            for r in reports:
                r.notes.append("the run was interrupted later, in a benchmark not recorded here; these figures are complete")
        write_results(reports, command, ctx.engine, started)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
