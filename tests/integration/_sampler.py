"""Watch a service's containers on the real engine while something happens to it.

A background thread runs `docker ps` for one service every ~0.2 s and keeps what it saw:
per sample, the running containers with their task name, spec version label and health.
Tests then assert on every sample (e.g. "never fewer than 6 healthy").
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Seen:
    task: str  # shoal.task.name: service.slot (or service.node)
    service: str
    version: int  # shoal.spec.version of the task's spec
    health: str  # "healthy" | "unhealthy" | "starting" | "" (no health check)


class ContainerSampler:
    def __init__(self, service: str, interval: float = 0.2, label: str = "shoal.service.name"):
        """Containers whose `label` is `service` (e.g. label="com.docker.stack.namespace" and a stack)."""
        self.service = service
        self.label = label
        self.interval = interval
        self.samples: list[tuple[float, list[Seen]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> list[Seen]:
        p = subprocess.run(
            ["docker", "ps", "--filter", f"label={self.label}={self.service}", "--format",
             '{{.Label "shoal.task.name"}}\t{{.Label "shoal.spec.version"}}\t{{.Status}}\t'
             '{{.Label "shoal.service.name"}}'],
            capture_output=True, text=True, timeout=60)
        out = []
        for line in p.stdout.splitlines():
            name, version, status, service = (line.split("\t") + ["", "", "", ""])[:4]
            health = ""
            if "(healthy)" in status:
                health = "healthy"
            elif "(unhealthy)" in status:
                health = "unhealthy"
            elif "health: starting" in status:
                health = "starting"
            out.append(Seen(name, service, int(version or 0), health))
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self.sample()))
            except (subprocess.TimeoutExpired, ValueError):
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "ContainerSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=70)

    # -- views ------------------------------------------------------------------------
    def counts(self, pred=lambda s: True) -> list[int]:
        return [sum(1 for s in seen if pred(s)) for _, seen in self.samples]

    def versions(self) -> set[int]:
        return {s.version for _, seen in self.samples for s in seen}
