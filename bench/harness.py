"""Shared pieces of the Shoal-vs-Swarm benchmarks (see bench/README.md).

* Engine: a small synchronous Docker Engine API client over the unix socket (one
  connection per thread), used to poll the engine's view of running containers the same
  way for both orchestrators, to kill containers and for the engine floor.
* Swarm / Shoal: the two orchestrators behind one interface (deploy, rm, scale, update,
  label names), driven through their own command lines.
* Stats, table printing and bench/RESULTS.md writing.
"""
from __future__ import annotations

import datetime
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Callable, Iterable, Optional

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
STACKS = os.path.join(BENCH_DIR, "stacks")
RESULTS = os.path.join(BENCH_DIR, "RESULTS.md")
DOCKER_SOCK = os.environ.get("DOCKER_SOCK", "/var/run/docker.sock")
API = "/v1.41"
STACK_LABEL = "com.docker.stack.namespace"
POLL = 0.1  # seconds between two looks at the engine


class BenchError(Exception):
    """A measurement could not be taken (timeout, command failed, ...)."""


class Unavailable(Exception):
    """An orchestrator cannot run at all (its row reads 'not available (<reason>)')."""


# --------------------------------------------------------------------------- engine

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class Engine:
    """Docker Engine API 1.41 over the unix socket; thread-safe (a connection per thread)."""

    def __init__(self, sock: str = DOCKER_SOCK):
        self.sock = sock
        self._local = threading.local()

    def _conn(self) -> _UnixConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = _UnixConnection(self.sock)
        return c

    def call(self, method: str, path: str, body=None, ok=(200, 201, 204, 304)):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, API + path, body=data, headers=headers)
                r = conn.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        if r.status not in ok:
            raise BenchError(f"engine {method} {path}: {r.status} {raw[:300].decode(errors='replace')}")
        return json.loads(raw) if raw and raw[:1] in (b"{", b"[") else None

    # containers
    def containers(self, labels: Iterable[str] = (), all: bool = False, status: Optional[str] = None) -> list:
        f: dict = {}
        if labels:
            f["label"] = list(labels)
        if status:
            f["status"] = [status]
        q = urllib.parse.urlencode({"all": "1" if all else "0", "filters": json.dumps(f)})
        return self.call("GET", f"/containers/json?{q}")

    def running(self, *labels: str) -> list:
        return self.containers(labels, status="running")

    def count_running(self, *labels: str) -> int:
        return len(self.running(*labels))

    def count_all(self, *labels: str) -> int:
        return len(self.containers(labels, all=True))

    def inspect(self, cid: str) -> dict:
        return self.call("GET", f"/containers/{cid}/json")

    def kill(self, cid: str) -> None:
        self.call("POST", f"/containers/{cid}/kill")

    def create(self, name: str, body: dict) -> str:
        return self.call("POST", f"/containers/create?name={urllib.parse.quote(name)}", body)["Id"]

    def start(self, cid: str) -> None:
        self.call("POST", f"/containers/{cid}/start")

    def stop(self, cid: str, t: int = 10) -> None:
        self.call("POST", f"/containers/{cid}/stop?t={t}")

    def remove(self, cid: str, force: bool = False) -> None:
        self.call("DELETE", f"/containers/{cid}?force={'1' if force else '0'}", ok=(200, 204, 404))

    def networks(self, *labels: str) -> list:
        q = urllib.parse.urlencode({"filters": json.dumps({"label": list(labels)})})
        return self.call("GET", f"/networks?{q}")

    def version(self) -> dict:
        return self.call("GET", "/version")

    def info(self) -> dict:
        return self.call("GET", "/info")


# --------------------------------------------------------------------------- helpers

def sh(argv: list[str], check: bool = True, timeout: float = 300, env: Optional[dict] = None,
       input: Optional[str] = None) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(argv)}` did not return within {timeout:.0f}s")
    except FileNotFoundError as e:
        raise BenchError(f"{argv[0]}: {e}")
    if check and p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise BenchError(f"`{' '.join(argv)}` failed: {msg[-1] if msg else 'exit ' + str(p.returncode)}")
    return p


def wait_until(pred: Callable[[], bool], timeout: float, what: str, poll: float = POLL) -> float:
    """Polls pred until true; returns time.monotonic() of the first true look."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def vmrss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- orchestrators

class Orchestrator:
    name = "?"
    service_label = "?"  # container label holding the (full) service name
    stack = "?"          # stack names differ so both can be deployed side by side

    def __init__(self, engine: Engine):
        self.engine = engine
        self.unavailable: Optional[str] = None
        self.started_by_us = False
        self.deployed: set[str] = set()

    def stack_name(self, bench: str) -> str:
        return f"{self.stack}{bench}"

    def svc(self, stack: str, name: str) -> str:
        return f"{stack}_{name}"

    # the engine's view (identical for both orchestrators)
    def running(self, stack: str) -> int:
        return self.engine.count_running(f"{STACK_LABEL}={stack}")

    def existing(self, stack: str) -> int:
        return self.engine.count_all(f"{STACK_LABEL}={stack}")

    def running_of(self, service: str) -> list:
        return self.engine.running(f"{self.service_label}={service}")

    def deploy_and_wait(self, bench: str, file: str, expect: int, timeout: float = 300) -> str:
        stack = self.stack_name(bench)
        self.deployed.add(stack)
        self.deploy(file, stack)
        wait_until(lambda: self.running(stack) == expect, timeout, f"{self.name}: {expect} running in {stack}")
        return stack

    def rm_and_wait(self, stack: str, timeout: float = 300) -> None:
        self.rm(stack)
        wait_until(lambda: self.existing(stack) == 0, timeout, f"{self.name}: containers of {stack} gone")
        self.deployed.discard(stack)
        self.wait_networks_gone(stack)

    def wait_networks_gone(self, stack: str, timeout: float = 30) -> bool:
        try:
            wait_until(lambda: not self.engine.networks(f"{STACK_LABEL}={stack}"), timeout,
                       f"networks of {stack} gone", poll=0.25)
            return True
        except BenchError:
            return False

    def cleanup(self) -> None:
        for stack in list(self.deployed):
            try:
                self.rm_and_wait(stack, timeout=120)
            except BenchError as e:
                print(f"{self.name}: cleanup of {stack}: {e}", file=sys.stderr)

    # to implement
    def setup(self) -> None: ...
    def teardown(self) -> None: ...
    def deploy(self, file: str, stack: str) -> None: ...
    def rm(self, stack: str) -> None: ...
    def scale(self, service: str, n: int) -> None: ...
    def update_env(self, service: str, key: str, value: str) -> None: ...
    def update_completed_at(self, service: str) -> Optional[float]: ...


class Swarm(Orchestrator):
    name = "swarm"
    service_label = "com.docker.swarm.service.name"
    stack = "bsw"

    def state(self) -> str:
        return self.engine.info().get("Swarm", {}).get("LocalNodeState", "")

    def setup(self) -> None:
        if shutil.which("docker") is None:
            raise Unavailable("no docker CLI")
        st = self.state()
        if st == "inactive":
            sh(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], timeout=120)
            self.started_by_us = True
            print("swarm: `docker swarm init --advertise-addr 127.0.0.1` (left again at the end)", flush=True)
        elif st != "active":
            raise Unavailable(f"swarm state is {st!r}")

    def teardown(self) -> None:
        self.cleanup()
        if self.started_by_us:
            sh(["docker", "swarm", "leave", "--force"], check=False, timeout=120)
            self.started_by_us = False
            print("swarm: left (`docker swarm leave --force`)", flush=True)

    def deploy(self, file: str, stack: str) -> None:
        sh(["docker", "stack", "deploy", "--resolve-image", "never", "-c", file, stack])

    def rm(self, stack: str) -> None:
        sh(["docker", "stack", "rm", stack])

    def scale(self, service: str, n: int) -> None:
        sh(["docker", "service", "scale", "--detach", f"{service}={n}"])

    def update_env(self, service: str, key: str, value: str) -> None:
        sh(["docker", "service", "update", "--detach", "--env-add", f"{key}={value}", service])

    def update_completed_at(self, service: str) -> Optional[float]:
        out = sh(["docker", "service", "inspect", "--format", "{{json .UpdateStatus}}", service]).stdout
        st = json.loads(out or "null") or {}
        if st.get("State") != "completed" or not st.get("CompletedAt"):
            return None
        return parse_rfc3339(st["CompletedAt"])


def parse_rfc3339(s: str) -> float:
    # 2024-05-01T10:11:12.123456789Z -> epoch seconds (ns truncated to µs)
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    else:
        s += ".0"
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class Shoal(Orchestrator):
    name = "shoal"
    service_label = "shoal.service.name"
    stack = "bsh"

    def __init__(self, engine: Engine, data_dir: str, port: int):
        super().__init__(engine)
        self.data_dir = data_dir
        self.port = port
        self.env = {**os.environ, "SHOAL_DATA_DIR": data_dir}
        self.env["PYTHONPATH"] = REPO + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return sh([sys.executable, "-m", "shoal", *args], env=self.env, timeout=timeout)

    def pid(self) -> Optional[int]:
        try:
            with open(os.path.join(self.data_dir, "shoal.pid")) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def daemon_running(self) -> bool:
        return self.pid() is not None

    def setup(self) -> None:
        try:
            if os.path.exists(os.path.join(self.data_dir, "cluster.json")):
                if not self.daemon_running():
                    self.cli("start", timeout=120)
                    print(f"shoal: started the existing cluster in {self.data_dir}", flush=True)
            else:
                self.cli("init", "--port", str(self.port), timeout=120)
                self.started_by_us = True
                print(f"shoal: `SHOAL_DATA_DIR={self.data_dir} shoal init --port {self.port}` "
                      f"(`shoal leave --force` at the end)", flush=True)
            if not self.daemon_running():
                raise Unavailable(f"no live daemon pid in {self.data_dir}/shoal.pid after init")
            self.cli("service", "ls", "--format", "json", timeout=60)
        except BenchError as e:
            raise Unavailable(str(e))

    def teardown(self) -> None:
        if self.unavailable is None or self.daemon_running():
            self.cleanup()
        if self.started_by_us:
            try:
                self.cli("leave", "--force", timeout=180)
                print("shoal: left (`shoal leave --force`)", flush=True)
            except BenchError as e:
                print(f"shoal: leave failed: {e}", file=sys.stderr)
            self.started_by_us = False

    def deploy(self, file: str, stack: str) -> None:
        self.cli("stack", "deploy", "-c", file, stack)

    def rm(self, stack: str) -> None:
        self.cli("stack", "rm", stack)

    def scale(self, service: str, n: int) -> None:
        self.cli("service", "scale", f"{service}={n}")

    def update_env(self, service: str, key: str, value: str) -> None:
        self.cli("service", "update", "--env-add", f"{key}={value}", service)

    def update_completed_at(self, service: str) -> Optional[float]:
        out = json.loads(self.cli("service", "inspect", service).stdout)
        st = (out[0] if isinstance(out, list) else out).get("update_status") or {}
        if st.get("state") != "completed" or not st.get("completed_at"):
            return None
        return float(st["completed_at"])


# --------------------------------------------------------------------------- stats / output

def summary(vals: list[float]) -> Optional[tuple[float, float, float]]:
    return (min(vals), statistics.median(vals), max(vals)) if vals else None


def fmt_mmm(v: Optional[tuple], unit: str = "s", prec: int = 2) -> str:
    if v is None:
        return "—"
    return " / ".join(f"{x:.{prec}f}" for x in v) + (f" {unit}" if unit else "")


class Row:
    """One measure: samples per column (orchestrator), or the reason a column has none."""

    def __init__(self, measure: str, cols: tuple, unit: str = "s", prec: int = 2, doc: str = ""):
        self.measure, self.unit, self.prec, self.doc = measure, unit, prec, doc
        self.samples: dict[str, list[float]] = {c: [] for c in cols}
        self.note: dict[str, str] = {}

    def add(self, who: str, v: float) -> None:
        self.samples[who].append(v)

    def last(self, who: str) -> str:
        s = self.samples.get(who)
        return f"{s[-1]:.{self.prec}f}" if s else "—"

    def cell(self, who: str) -> str:
        if self.note.get(who) and not self.samples[who]:
            return f"{who}: not available ({self.note[who]})" if who == "shoal" else self.note[who]
        return fmt_mmm(summary(self.samples[who]), self.unit, self.prec)

    def ratio(self) -> str:
        cols = list(self.samples)
        if len(cols) != 2:
            return "—"
        a, b = summary(self.samples[cols[0]]), summary(self.samples[cols[1]])
        if not a or not b or b[1] == 0:
            return "—"
        return f"{a[1] / b[1]:.2f}×"


class Report:
    def __init__(self, title: str, desc: str, reps: int, cols: tuple = ("shoal", "swarm")):
        self.title, self.desc, self.reps, self.cols = title, desc, reps, cols
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.extra: list[str] = []  # preformatted lines (e.g. another script's table)

    def row(self, measure: str, **kw) -> Row:
        r = Row(measure, self.cols, **kw)
        self.rows.append(r)
        return r

    def mark(self, who: str, reason: str) -> None:
        for r in self.rows:
            r.note.setdefault(who, reason)

    def _heads(self) -> list[str]:
        names = {"shoal": "Shoal", "swarm": "Swarm", "engine": "Engine alone"}
        h = [f"{names.get(c, c)} min / median / max" for c in self.cols]
        if len(self.cols) == 2:
            h.append(f"{names.get(self.cols[0])}/{names.get(self.cols[1])} (medians)")
        return h

    def lines_markdown(self) -> list[str]:
        heads = self._heads() + ["Swarm doc (median)"]
        out = [f"### {self.title}", "", self.desc, "",
               "| measure | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
        for r in self.rows:
            cells = [r.cell(c) for c in self.cols] + ([r.ratio()] if len(self.cols) == 2 else [])
            cells = [c.replace("|", "\\|") for c in [r.measure, *cells, r.doc or "—"]]
            out.append("| " + " | ".join(cells) + " |")
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        if self.extra:
            out += ["", "```", *self.extra, "```"]
        return out

    def print(self) -> None:
        w = max([len(r.measure) for r in self.rows] + [10])
        table = []
        for r in self.rows:
            cells = [r.cell(c) for c in self.cols] + ([r.ratio()] if len(self.cols) == 2 else [])
            table.append((r.measure, cells, r.doc))
        ncell = len(self._heads())
        widths = [max([len(t[1][i]) for t in table] + [len(self._heads()[i])]) for i in range(ncell)]
        print()
        print(f"== {self.title} ({self.reps} reps)")
        print(f"{'measure':<{w}}  " + "  ".join(f"{h:<{widths[i]}}" for i, h in enumerate(self._heads()))
              + "  Swarm doc")
        for m, cells, doc in table:
            print(f"{m:<{w}}  " + "  ".join(f"{c:<{widths[i]}}" for i, c in enumerate(cells)) + f"  {doc}")
        for n in self.notes:
            print(f"  note: {n}")
        for line in self.extra:
            print("    " + line)
        print(flush=True)


def machine_line(engine: Engine) -> str:
    cores = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    try:
        v = engine.version()
        eng = f"Docker Engine {v.get('Version')} (API {v.get('ApiVersion')})"
    except Exception as e:  # noqa: BLE001
        eng = f"engine unknown ({e})"
    return (f"{cores} cores, {mem_kib / 1024 / 1024:.1f} GiB, kernel {platform.release()}, {eng}, "
            f"Python {platform.python_version()}")


def write_results(reports: list[Report], command: str, engine: Engine, started: float) -> None:
    now = datetime.datetime.now().astimezone()
    lines = ["", f"## {now:%Y-%m-%d %H:%M %Z} — {', '.join(r.title.split(' —')[0] for r in reports)}", "",
             f"- command: `{command}`",
             f"- machine: {machine_line(engine)}",
             f"- wall time of the run: {time.monotonic() - started:.0f} s", ""]
    for r in reports:
        lines += r.lines_markdown() + [""]
    header = ("# Benchmark results: Shoal beside Docker Swarm mode on the same engine\n\n"
              "Written by `bench/run.py` (see bench/README.md for what each figure means). "
              "Each run appends a section; newest last.\n")
    if not os.path.exists(RESULTS):
        with open(RESULTS, "w") as f:
            f.write(header)
    with open(RESULTS, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results appended to {os.path.relpath(RESULTS, os.getcwd())}")
