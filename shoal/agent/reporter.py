"""Task status reports: what the agent tells the manager, batched, never lost on a retry.

Every state reported moves the task forward along the agent's column of the state table;
a report that would go backwards is dropped here already. While the manager cannot be
reached, the newest news of each task waits and goes with the next batch.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shoal.agent.client import ManagerClient, ManagerRefused, ManagerUnavailable
from shoal.core import task_states as ts

log = logging.getLogger("shoal.agent")


class StatusReporter:
    def __init__(self, client: ManagerClient):
        self.client = client
        self.reported: dict[str, str] = {}  # task id -> last state reported
        self.outbox: dict[str, dict] = {}
        self._event = asyncio.Event()

    def report(self, task_id: str, state: str, **fields: Any) -> None:
        prev = self.reported.get(task_id)
        if prev is not None and ts.RANK[state] < ts.RANK[prev]:
            return
        self.reported[task_id] = state
        u = self.outbox.setdefault(task_id, {"task_id": task_id})
        u.update(state=state, timestamp=time.time(), **{k: v for k, v in fields.items() if v is not None})
        self._event.set()

    def last(self, task_id: str):
        return self.reported.get(task_id)

    async def run(self) -> None:
        while True:
            await self._event.wait()
            await asyncio.sleep(0.02)  # batch
            self._event.clear()
            batch, self.outbox = list(self.outbox.values()), {}
            try:
                await self.client.call("POST", "/v1/agent/status", json={"updates": batch})
            except ManagerRefused as e:
                # The manager read the batch and refused it (a bug on one side): logged, dropped;
                # retrying the same batch would be refused again.
                log.error("status report refused: %s", e)
            except ManagerUnavailable as e:
                log.warning("status report failed, will retry: %s", e)
                for u in batch:  # keep the newest news per task
                    self.outbox.setdefault(u["task_id"], u)
                self._event.set()
                await asyncio.sleep(1)
