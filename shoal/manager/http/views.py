"""How the API shows stored objects: services with replica counts, nodes, configs, secrets.

A secret's view never holds its data, in any version.
"""
from __future__ import annotations

import base64

from shoal.core import task_states as ts
from shoal.core.reconcile import node_eligible
from shoal.model.objects import ConfigObj, Node, NodeFacts, SecretObj, Service
from shoal.store import Store


class ServiceViews:
    """Service views, cached until the service or one of its tasks changes."""

    def __init__(self, store: Store):
        self.store = store
        self._views: dict[str, tuple[tuple[int, int, int], dict]] = {}
        self._nodes: tuple[int, int, list[Node], set[str]] = (-1, 0, [], set())  # (rev, key, nodes, ready ids)

    def _node_state(self) -> tuple[int, list[Node], set[str]]:
        """(a key that changes with any node, the nodes, the ready ones), once per store revision."""
        rev = self.store.rev
        if self._nodes[0] != rev:
            nodes = self.store.all(Node)
            key = sum(n.version for n in nodes) + 1000003 * len(nodes)
            self._nodes = (rev, key, nodes, {n.id for n in nodes if n.state == "ready"})
        return self._nodes[1], self._nodes[2], self._nodes[3]

    def view(self, svc: Service) -> dict:
        nodes_key, nodes, ready = self._node_state()
        key = (svc.version, self.store.service_seq(svc.id), nodes_key)
        hit = self._views.get(svc.id)
        if hit is not None and hit[0] == key:
            return hit[1]
        view = self._build(svc, nodes, ready)
        if len(self._views) > 10_000:
            self._views.clear()
        self._views[svc.id] = (key, view)
        return view

    def _build(self, svc: Service, nodes: list[Node], ready: set[str]) -> dict:
        """Replicas running counts tasks running on a ready node (and healthy, when the service
        has a health check); tasks on a down node are counted apart, as unknown."""
        tasks = self.store.tasks_of_service(svc.id)
        hc = svc.spec.container.healthcheck
        has_health = bool(hc and not hc.disable and hc.test != ["NONE"])
        running = completed = unknown = 0
        for t in tasks:
            state = t.status.state
            if t.desired_state == ts.RUNNING and state == ts.RUNNING and t.node_id in ready:
                if t.status.health in (None, "healthy") or (not has_health and t.status.health == "starting"):
                    running += 1
            elif state == ts.UNKNOWN:
                unknown += 1
            if state == ts.COMPLETE:
                completed += 1
        if svc.spec.mode == "global":
            # one per eligible node (before the loop made their tasks too), and one per node that
            # runs one still (a paused node keeps its task)
            desired = len({n.id for n in nodes if node_eligible(svc, n)}
                          | {t.node_id for t in tasks if t.desired_state == ts.RUNNING and t.node_id in ready})
        else:
            desired = svc.spec.replicas
        d = svc.model_dump(mode="json")
        d["replicas_running"] = running
        d["replicas_desired"] = desired
        d["replicas_unknown"] = unknown
        d["completed"] = completed
        return d


def node_view(n: Node, self_id: str, facts: NodeFacts | None) -> dict:
    d = n.model_dump(mode="json")
    d["self"] = n.id == self_id
    d["last_heartbeat"] = facts.last_heartbeat if facts is not None else 0.0
    return d


def config_view(c: ConfigObj) -> dict:
    """The current version's data; `versions` lists every version still kept (oldest first)."""
    d = c.model_dump(mode="json", exclude={"older_versions"})
    d["data"] = base64.b64encode(c.data).decode()
    d["versions"] = c.versions
    return d


def secret_view(s: SecretObj) -> dict:
    return {"id": s.id, "version": s.version, "created_at": s.created_at, "updated_at": s.updated_at,
            "name": s.name, "labels": s.labels, "driver": s.driver, "data_version": s.data_version,
            "versions": s.versions}
