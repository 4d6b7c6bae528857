"""The orchestrator's full passes in a cluster at rest (not a test): what they cost the manager.

A full pass plans every service again (the safety net of an incremental, level-triggered
loop). Its cost grows with the cluster's tasks, so a fixed period costs a share of the
manager's core that grows with them too. This builds a store of S services x R running
replicas on N nodes (no engine, no network: the orchestrator against its store alone),
times full passes, and prints the share of a core they take with Shoal's period beside a
fixed 10 s period (the reference, measured in the same run).

    python3 bench/full_pass.py --services 100 --replicas 1000 --nodes 1000 --reps 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shoal.manager import orchestrator as orch  # noqa: E402
from shoal.model.objects import Node, NodeDescription, Service, Task, TaskStatus  # noqa: E402
from shoal.model.specs import ContainerSpec, ServiceSpec  # noqa: E402
from shoal.store.sqlite import SqliteStore  # noqa: E402


def build(path: str, services: int, replicas: int, nodes: int) -> SqliteStore:
    st = SqliteStore(path)
    with st.txn():
        for i in range(nodes):
            st.put(Node(id=f"n{i}", state="ready", description=NodeDescription(
                engine_labels={"sim": "true"}, nano_cpus=2 * 10**9, memory_bytes=8 << 30)))
        for s in range(services):
            spec = ServiceSpec(name=f"app_s{s}", container=ContainerSpec(image="busybox"), replicas=replicas,
                               placement={"constraints": ["engine.labels.sim == true"]})
            svc = st.put(Service(id=f"s{s}", spec=spec))
            for k in range(replicas):
                st.put(Task(id=f"t{s}-{k}", service_id=svc.id, service_name=spec.name, slot=k + 1,
                            node_id=f"n{(s * 7 + k) % nodes}", spec=spec, spec_version=svc.spec_version,
                            status=TaskStatus(state="running")))
    return st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=1000, help="running replicas per service")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        built = time.perf_counter()
        st = build(os.path.join(d, "store.db"), a.services, a.replicas, a.nodes)
        print(f"store: {a.services} services x {a.replicas} running replicas on {a.nodes} nodes "
              f"(built in {time.perf_counter() - built:.1f} s)")
        o = orch.Orchestrator(st)
        costs, periods = [], []
        for _ in range(a.reps):
            o._last_full = 0.0  # the next pass is a full one
            began = time.perf_counter()
            o.tick(time.time(), budget=None)
            costs.append(time.perf_counter() - began)
            periods.append(o.full_pass_every())
        st.close()
    cost = statistics.median(costs)
    period = statistics.median(periods)
    fixed = orch.FULL_PASS_EVERY
    print(f"{'measure':44} {'Shoal':>12} {'fixed 10 s (reference)':>24}")
    print(f"{'one full pass (s, min / median / max)':44} "
          f"{f'{min(costs):.2f}/{cost:.2f}/{max(costs):.2f}':>12} {'the same':>24}")
    print(f"{'seconds between full passes':44} {period:>12.0f} {fixed:>24.0f}")
    print(f"{'share of a core at rest':44} {f'{100 * cost / period:.1f} %':>12} {f'{100 * cost / fixed:.1f} %':>24}")


if __name__ == "__main__":
    main()
