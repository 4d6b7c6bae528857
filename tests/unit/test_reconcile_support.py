"""Builders and a tiny simulated cluster shared by the scheduler/reconcile/update tests."""
from __future__ import annotations

import itertools

from shoal.core.orchestrate import orchestrate
from shoal.core.plan import apply_plan
from shoal.core.task_states import ASSIGNED, PENDING, RUNNING, SHUTDOWN, TERMINAL, FAILED
from shoal.model.objects import Node, NodeDescription, Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, ServiceSpec
from shoal.scheduler import schedule

GiB = 1 << 30
CPU = 10**9


def make_spec(name="web", image="busybox:1", **kw) -> ServiceSpec:
    return ServiceSpec(name=name, container=ContainerSpec(image=image), **kw)


def make_service(spec=None, sid="svc1", **kw) -> Service:
    return Service(id=sid, spec=spec or make_spec(), **kw)


def make_node(nid, state="ready", availability="active", labels=None, cpus=4, mem_gib=8, hostname=None,
              role="worker", os="linux", arch="x86_64", engine_labels=None) -> Node:
    return Node(id=nid, state=state, availability=availability, labels=labels or {}, role=role,
                description=NodeDescription(hostname=hostname or nid, nano_cpus=cpus * CPU,
                                            memory_bytes=mem_gib * GiB, os=os, arch=arch,
                                            engine_labels=engine_labels or {}))


_ids = itertools.count(1)


def ids():
    c = itertools.count(1)
    return lambda: f"t{next(c)}"


def make_task(service: Service, slot=1, state=RUNNING, node_id="n1", created=0.0, ts=0.0, desired="running",
              attempt=0, tid=None, spec=None, spec_version=None, exit_code=None, health=None) -> Task:
    return Task(id=tid or f"x{next(_ids)}", created_at=created, service_id=service.id,
                service_name=service.spec.name, slot=slot, node_id=node_id, desired_state=desired,
                status=TaskStatus(state=state, timestamp=ts, exit_code=exit_code, health=health),
                spec=spec or service.spec, spec_version=service.spec_version if spec_version is None else spec_version,
                attempt=attempt)


class Sim:
    """A deterministic cluster: orchestrate -> apply -> schedule -> agents move tasks one step.

    Agents: assigned -> running (at/after not_before) unless the task's image is in `bad_images`
    (-> failed); desired shutdown -> shutdown. One step per tick.
    """

    def __init__(self, service: Service, nodes, now=0.0, bad_images=()):
        self.service, self.nodes, self.now = service, list(nodes), now
        self.tasks: list[Task] = []
        self.bad_images = set(bad_images)
        self.new_id = ids()
        self.history = []  # list of task lists after each tick

    def tick(self, dt=1.0):
        plan = orchestrate(self.service, self.tasks, self.nodes, self.now, id_factory=self.new_id)
        if plan.service is not None:
            self.service = plan.service
        self.tasks = apply_plan(self.tasks, plan, self.now)
        self.last_plan = plan
        self.after_plan(self.tasks)
        pending = [t for t in self.tasks if t.status.state == PENDING]
        res = schedule(pending, self.nodes, self.tasks, self.now)
        out = []
        for t in self.tasks:
            if t.id in res.assignments:
                t = t.model_copy(update={"node_id": res.assignments[t.id],
                                         "status": TaskStatus(state=ASSIGNED, timestamp=self.now)})
            elif t.status.state not in TERMINAL and t.desired_state == SHUTDOWN and t.status.state != PENDING:
                t = t.model_copy(update={"status": TaskStatus(state=SHUTDOWN, timestamp=self.now)})
            elif t.status.state == ASSIGNED and self.now >= t.not_before:
                if t.spec.container.image in self.bad_images:
                    t = t.model_copy(update={"status": TaskStatus(state=FAILED, timestamp=self.now, exit_code=1)})
                else:
                    t = t.model_copy(update={"status": TaskStatus(state=RUNNING, timestamp=self.now)})
            out.append(t)
        self.tasks = out
        self.history.append(out)
        self.now += dt
        return plan

    def after_plan(self, tasks):  # hook for invariant checks
        pass

    def run(self, ticks, dt=1.0):
        for _ in range(ticks):
            self.tick(dt)

    def running(self):
        return [t for t in self.tasks if t.status.state == RUNNING and t.desired_state == "running"]
