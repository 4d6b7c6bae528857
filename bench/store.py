"""The cluster store's writes: etcd beside SQLite, on this machine (issue #15).

    python3 bench/store.py [--services 300] [--tasks 3000] [--batch 100] [--reps 3]

Each repetition opens a fresh store of each kind (SQLite: a file in a temporary directory,
WAL, synced at every commit; etcd: a fresh member of Debian's etcd 3.4 with its defaults,
data in a temporary directory, reached over HTTP on loopback) and measures, through the
Store interface the manager uses:

- service writes: one service per transaction (as `service create`/`update` commit), per
  second, and each commit's latency (p50 / p99);
- task status reports: `--tasks` running tasks, then reports of `--batch` tasks per
  transaction (as the dispatcher groups the reports of many agents), reports per second;
- a big transaction: `--tasks` tasks placed in one transaction (the orchestrator's first
  pass over a deploy), seconds.

Figures are printed side by side (min / median / max over the repetitions) with SQLite's,
measured in the same run, as the reference.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from etcd_server import EtcdServer  # noqa: E402
from shoal.model.objects import Service, Task, TaskStatus  # noqa: E402
from shoal.model.specs import ContainerSpec, ServiceSpec  # noqa: E402
from shoal.store.etcd import EtcdStore  # noqa: E402
from shoal.store.sqlite import SqliteStore  # noqa: E402

mono = time.perf_counter


def service(i: int) -> Service:
    return Service(id=f"svc{i}", spec=ServiceSpec(name=f"s_{i}", container=ContainerSpec(image="busybox")))


def measure(st, services: int, tasks: int, batch: int) -> dict[str, float]:
    out: dict[str, float] = {}
    lat = []
    t0 = mono()
    for i in range(services):
        a = mono()
        st.put(service(i))
        lat.append(mono() - a)
    out["service writes/s"] = services / (mono() - t0)
    lat.sort()
    out["service write p50 (ms)"] = 1000 * lat[len(lat) // 2]
    out["service write p99 (ms)"] = 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    svc = st.get(Service, "svc0")
    t0 = mono()
    with st.txn():
        for i in range(tasks):
            st.put(Task(id=f"t{i}", service_id=svc.id, service_name=svc.spec.name, slot=i, node_id=f"n{i % 50}",
                        spec=svc.spec, status=TaskStatus(state="assigned")))
    out[f"{tasks} tasks in one transaction (s)"] = mono() - t0
    ids = [f"t{i}" for i in range(tasks)]
    t0 = mono()
    for k in range(0, tasks, batch):
        with st.txn():
            for tid in ids[k:k + batch]:
                t = st.get(Task, tid)
                st.put(t.model_copy(update={"status": TaskStatus(state="running", message="started")}), quiet=True)
    out["status reports/s"] = tasks / (mono() - t0)
    return out


def fmt(xs: list[float]) -> str:
    p = 0 if min(xs) >= 100 else (1 if min(xs) >= 1 else 2)
    return f"{min(xs):,.{p}f} / {statistics.median(xs):,.{p}f} / {max(xs):,.{p}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=300)
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; etcd: "
          f"{subprocess.run(['etcd', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    results: dict[str, dict[str, list[float]]] = {"etcd": {}, "sqlite": {}}
    for rep in range(a.reps):
        for kind in (("sqlite", "etcd") if rep % 2 == 0 else ("etcd", "sqlite")):
            tmp = tempfile.mkdtemp(prefix="shoal-bench-store-")
            server = None
            try:
                if kind == "sqlite":
                    st = SqliteStore(os.path.join(tmp, "store.db"))
                else:
                    server = EtcdServer(__import__("pathlib").Path(tmp) / "etcd").start()
                    st = EtcdStore(server.url, prefix="/bench/")
                figures = measure(st, a.services, a.tasks, a.batch)
                st.close()
            finally:
                if server is not None:
                    server.stop()
                shutil.rmtree(tmp, ignore_errors=True)
            for k, v in figures.items():
                results[kind].setdefault(k, []).append(v)
            print(f"rep {rep + 1} {kind}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()), flush=True)
    print(f"\n== store writes, etcd beside SQLite ({a.reps} reps; {a.services} services, {a.tasks} tasks, "
          f"reports in transactions of {a.batch})")
    print(f"{'measure':<36} {'etcd min / median / max':<30} {'SQLite min / median / max':<30} etcd/SQLite")
    for k in results["sqlite"]:
        e, s = results["etcd"][k], results["sqlite"][k]
        print(f"{k:<36} {fmt(e):<30} {fmt(s):<30} {statistics.median(e) / statistics.median(s):.2f}x")


if __name__ == "__main__":
    main()
