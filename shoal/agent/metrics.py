"""The agent's Prometheus metrics: what it asked of its engine and how long that took, and
the containers it started. Served by the daemon with the manager's (one registry a node)."""
from __future__ import annotations

import re
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Histogram

ENGINE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Collections whose next path segment is an object's id or name.
_COLLECTIONS = {"containers", "networks", "volumes", "images", "exec", "tasks", "services", "nodes",
                "secrets", "configs", "plugins", "distribution"}
_VERBS = {"json", "create", "prune", "load", "list"}
_VERSION = re.compile(r"^/v\d+\.\d+(?=/)")


def call_of(path: str) -> str:
    """An engine API path with ids and names replaced, so that calls group by kind:
    `/v1.43/containers/3f9a…/start?x=1` → `/containers/{id}/start`."""
    path = _VERSION.sub("", path.split("?", 1)[0])
    parts = path.strip("/").split("/")
    out = []
    for i, part in enumerate(parts):
        if i > 0 and parts[i - 1] in _COLLECTIONS and part not in _VERBS:
            out.append("{id}")
        else:
            out.append(part)
    return "/" + "/".join(out)


class AgentMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None):
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.task_starts = Counter("shoal_agent_task_starts", "Containers this node's agent started for tasks",
                                   registry=r)
        self.task_start_failures = Counter("shoal_agent_task_start_failures",
                                           "Task containers that could not be created or started", registry=r)
        self.engine_calls = Histogram("shoal_engine_call_seconds", "Docker Engine API calls by the agent, "
                                      "by method and call", ["method", "call"], buckets=ENGINE_BUCKETS, registry=r)
        self.engine_errors = Counter("shoal_engine_call_errors", "Docker Engine API calls that failed "
                                     "(an error status or no answer)", ["method", "call"], registry=r)

    def engine_call(self, method: str, path: str, seconds: float, ok: bool) -> None:
        call = call_of(path)
        self.engine_calls.labels(method, call).observe(seconds)
        if not ok:
            self.engine_errors.labels(method, call).inc()
