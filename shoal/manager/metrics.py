"""The manager's Prometheus metrics: swarmkit's names where swarmkit has the metric, Shoal's
own (`shoal_…`) beside them.

Counts of objects follow the store's commits (tasks and nodes by state) or are the store's
own counts; durations and counters are fed by the components that know them.
Each component takes a `ManagerMetrics` and defaults to one on a private registry, so a
manager built without metrics (the unit tests) works unchanged.
"""
from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Callable, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shoal.core import task_states as ts
from shoal.model.objects import ConfigObj, NetworkObj, Node, Obj, SecretObj, Service, Task
from shoal.store.base import Store

NODE_STATES = ("unknown", "down", "ready", "disconnected")
# seconds: from a store commit (ms) to a scheduling delay or an orchestrator pass (s)
FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class StoreCounts(Collector):
    """swarm_manager_{nodes,tasks_total,services_total,configs_total,secrets_total,
    networks_total} and swarm_manager_leader. Tasks and nodes by state are counted as the
    store commits (O(changes): a scrape of 100,000 tasks costs nothing more than one of ten);
    the other totals are the store's own counts."""

    def __init__(self, store: Store, is_leader: Callable[[], bool]):
        self.store = store
        self.is_leader = is_leader
        self.tasks = Tally(t.status.state for t in store.all(Task))
        self.nodes = Tally(n.state for n in store.all(Node))

    def commit(self, changes: Iterable[tuple[Optional[Obj], Optional[Obj]]]) -> None:
        for old, new in changes:
            obj = new if new is not None else old
            if isinstance(obj, Task):
                if old is not None:
                    self.tasks[old.status.state] -= 1  # type: ignore[union-attr]
                if new is not None:
                    self.tasks[new.status.state] += 1  # type: ignore[union-attr]
            elif isinstance(obj, Node):
                if old is not None:
                    self.nodes[old.state] -= 1  # type: ignore[union-attr]
                if new is not None:
                    self.nodes[new.state] += 1  # type: ignore[union-attr]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        st = self.store
        nodes = GaugeMetricFamily("swarm_manager_nodes", "The number of nodes in the cluster, by state",
                                  labels=["state"])
        for state in sorted(set(NODE_STATES) | {s for s, n in self.nodes.items() if n}):
            nodes.add_metric([state], self.nodes.get(state, 0))
        yield nodes
        tasks = GaugeMetricFamily("swarm_manager_tasks_total", "The number of tasks in the cluster, by state",
                                  labels=["state"])
        for state in sorted(set(ts.ORDER) | {s for s, n in self.tasks.items() if n}):
            tasks.add_metric([state], self.tasks.get(state, 0))
        yield tasks
        for name, cls, what in (("services", Service, "services"), ("configs", ConfigObj, "configs"),
                                ("secrets", SecretObj, "secrets"), ("networks", NetworkObj, "networks")):
            yield GaugeMetricFamily(f"swarm_manager_{name}_total", f"The number of {what} in the cluster",
                                    value=st.count(cls))
        yield GaugeMetricFamily("swarm_manager_leader", "Indicates if this manager node is a leader",
                                value=1 if self.is_leader() else 0)


class ManagerMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None):
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.scheduling_delay = Histogram(
            "swarm_dispatcher_scheduling_delay_seconds",
            "Scheduling delay: from a task's creation until its node reports it running", buckets=SLOW, registry=r)
        self.store_write = Histogram(
            "swarm_store_write_tx_latency_seconds", "Latency of a store write transaction (commit included)",
            buckets=FAST, registry=r)
        self.orchestrator_pass = Histogram(
            "shoal_orchestrator_pass_seconds", "Duration of one orchestrator pass (reconcile, schedule, write)",
            buckets=FAST, registry=r)
        self.placements = Counter("shoal_scheduler_placements", "Tasks the scheduler placed on a node",
                                  registry=r)
        self.answers = Counter("shoal_dispatcher_assignments", "Assignment answers sent to agents, by kind "
                               "(full: every task; delta: only the tasks that changed)", ["kind"], registry=r)
        for kind in ("full", "delta"):
            self.answers.labels(kind)
        self.heartbeats = Counter("shoal_dispatcher_heartbeats", "Heartbeats received from nodes", registry=r)
        self.heartbeats_late = Counter(
            "shoal_dispatcher_heartbeats_late", "Heartbeats that came more than 1.5 periods after the node's "
            "previous one (the node was not yet judged down)", registry=r)
        self.nodes_down = Counter("shoal_dispatcher_nodes_down", "Times a node was judged down (missed "
                                  "heartbeats)", registry=r)

    def watch(self, store: Store, is_leader: Callable[[], bool] = lambda: True) -> None:
        """Count the store's objects at each scrape and follow its commits."""
        self.counts = StoreCounts(store, is_leader)
        self.registry.register(self.counts)
        store.observe(self.counts.commit)
        store.observe(self.commit)

    def commit(self, changes: Iterable[tuple[Optional[Obj], Optional[Obj]]]) -> None:
        """The store's observer: a task's first report of running gives its scheduling delay."""
        now = time.time()
        for old, new in changes:
            if isinstance(new, Task) and new.status.state == ts.RUNNING and new.created_at \
                    and (old is None or old.status.state != ts.RUNNING):
                self.scheduling_delay.observe(max(0.0, now - new.created_at))
