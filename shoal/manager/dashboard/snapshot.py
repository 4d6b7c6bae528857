"""What the dashboard shows, in one answer: nodes with what is reserved on them, services with
their replica counts and update progress, tasks with the scheduler's reason when pending,
stacks, configs and secrets (names and versions: never their data), networks, volumes.

Built from the store's in-memory copy and the same service views `service ls` uses, so the
page and the CLI never disagree on a count.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from shoal.core import task_states as ts
from shoal.manager.http.views import ServiceViews
from shoal.model.objects import ConfigObj, NetworkObj, Node, NodeFacts, SecretObj, Service, Task
from shoal.store import Store

FINISHED_PER_SERVICE = 10  # finished tasks shown per service (the newest)


def _ports(svc: Service) -> list[str]:
    out = []
    for p in svc.spec.ports:
        published = p.published or svc.published_ports.get(f"{p.target}/{p.protocol}")
        out.append(f"{published or '*'}:{p.target}/{p.protocol}" + (" (host)" if p.mode == "host" else ""))
    return out


def _task(t: Task) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "service": t.service_name, "service_id": t.service_id, "slot": t.slot,
            "node_id": t.node_id, "state": t.status.state, "desired": t.desired_state,
            "message": t.status.message, "error": t.status.err, "image": t.spec.container.image,
            "since": t.status.timestamp or t.updated_at or t.created_at, "health": t.status.health,
            "container_id": (t.status.container_id or "")[:12], "exit_code": t.status.exit_code,
            "active": t.status.state not in ts.TERMINAL}


def snapshot(store: Store, views: ServiceViews, self_id: str) -> dict[str, Any]:
    nodes = store.all(Node)
    services = store.all(Service)
    tasks: list[dict] = []
    reserved: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    finished: dict[str, list[Task]] = defaultdict(list)
    for svc in services:
        for t in store.tasks_of_service(svc.id):
            if t.status.state in ts.TERMINAL:
                finished[svc.id].append(t)
                continue
            tasks.append(_task(t))
            if t.node_id and t.desired_state == ts.RUNNING:
                r = t.spec.resources.reservations
                reserved[t.node_id][0] += r.nano_cpus
                reserved[t.node_id][1] += r.memory_bytes
    for svc_id, done in finished.items():
        done.sort(key=lambda t: t.status.timestamp or t.updated_at, reverse=True)
        tasks.extend(_task(t) for t in done[:FINISHED_PER_SERVICE])
    volumes = []
    node_views = []
    for n in sorted(nodes, key=lambda n: (n.role != "manager", n.description.hostname)):
        facts = store.get(NodeFacts, n.id)
        d = n.description
        node_views.append({
            "id": n.id, "hostname": d.hostname or n.id[:12], "role": n.role, "leader": n.leader, "self": n.id == self_id,
            "state": n.state, "message": n.message, "availability": n.availability, "labels": n.labels,
            "addr": n.addr, "engine_version": d.engine_version, "platform": f"{d.os}/{d.arch}",
            "nano_cpus": d.nano_cpus, "memory_bytes": d.memory_bytes,
            "reserved_nano_cpus": reserved[n.id][0], "reserved_memory_bytes": reserved[n.id][1]})
        if facts is not None:
            volumes += [{"name": v.name, "node": d.hostname or n.id[:12], "driver": v.driver} for v in facts.volumes]
    service_views = []
    for svc in sorted(services, key=lambda s: s.spec.name):
        v = views.view(svc)
        u = svc.update_status
        service_views.append({
            "id": svc.id, "name": svc.spec.name, "stack": svc.spec.stack or "", "mode": svc.spec.mode,
            "image": svc.spec.container.image, "replicas_running": v["replicas_running"],
            "replicas_desired": v["replicas_desired"], "replicas_unknown": v["replicas_unknown"],
            "ports": _ports(svc), "update": {"state": u.state, "message": u.message} if u else None,
            "can_rollback": svc.previous_spec is not None})
    stacks: dict[str, int] = defaultdict(int)
    for svc in services:
        if svc.spec.stack:
            stacks[svc.spec.stack] += 1
    return {
        "nodes": node_views, "services": service_views, "tasks": tasks,
        "stacks": [{"name": k, "services": stacks[k]} for k in sorted(stacks)],
        "configs": [{"name": c.name, "version": c.data_version, "versions": c.versions, "labels": c.labels}
                    for c in sorted(store.all(ConfigObj), key=lambda c: c.name)],
        "secrets": [{"name": s.name, "version": s.data_version, "versions": s.versions, "labels": s.labels}
                    for s in sorted(store.all(SecretObj), key=lambda s: s.name)],
        "networks": [{"name": n.spec.name, "driver": n.spec.driver, "subnet": n.subnet, "stack": n.spec.stack or ""}
                     for n in sorted(store.all(NetworkObj), key=lambda n: n.spec.name)],
        "volumes": sorted(volumes, key=lambda v: (v["name"], v["node"])),
    }
