"""Micro-benchmark: placements per second for N pending tasks on M nodes (not a test).

    python bench/scheduler_throughput.py [--nodes 1000] [--tasks 100000] [--services 100]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from shoal.model.objects import Node, NodeDescription, Task, TaskStatus  # noqa: E402
from shoal.model.specs import ContainerSpec, Placement, ResourceRequirements, Resources, ServiceSpec  # noqa: E402
from shoal.scheduler import schedule  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--zones", type=int, default=3, help="zone labels; services alternate spread/no spread")
    a = ap.parse_args()

    nodes = [Node(id=f"node{i:05d}", state="ready",
                  labels={"zone": f"z{i % a.zones}"},
                  description=NodeDescription(hostname=f"h{i}", nano_cpus=64 * 10**9, memory_bytes=256 << 30))
             for i in range(a.nodes)]
    specs = []
    for s in range(a.services):
        specs.append(ServiceSpec(
            name=f"svc{s}", container=ContainerSpec(image="busybox"),
            resources=ResourceRequirements(reservations=Resources(nano_cpus=10**7, memory_bytes=16 << 20)),
            placement=Placement(constraints=["node.role == worker"] if s % 2 else [],
                                preferences=["spread=node.labels.zone"] if s % 3 == 0 else [])))
    per = a.tasks // a.services
    pending = []
    status = TaskStatus(state="pending")
    for s, spec in enumerate(specs):
        for k in range(per):
            pending.append(Task.model_construct(
                id=f"t{s}-{k}", version=0, created_at=0.0, updated_at=0.0,
                service_id=f"svc{s}", service_name=spec.name, slot=k + 1, node_id=None,
                desired_state="running", status=status, spec=spec, spec_version=1,
                not_before=0.0, attempt=0))
    t0 = time.perf_counter()
    res = schedule(pending, nodes, [], now=1000.0)
    dt = time.perf_counter() - t0
    placed = len(res.assignments)
    print(f"{placed} placements ({len(res.unplaced)} unplaced) on {a.nodes} nodes in {dt:.2f} s: "
          f"{placed / dt:,.0f} placements/s")


if __name__ == "__main__":
    main()
