"""Deletes kept config/secret versions once nothing pins them (run at the end of each orchestrator pass).

A rotated object keeps its older versions while a service's spec or previous_spec, or an
unfinished task, pins them (shoal.core.file_versions). Checking that must not cost a scan of
every task on every store change: while no object keeps an old version this costs nothing;
while some do, the pins of each service's unfinished tasks are remembered and refreshed only
for the services whose tasks changed (the orchestrator's change set), after one full scan
when the first old version appears.
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

from shoal.core.file_versions import CONFIG, SECRET, Pin, live_task_pins, service_pins, unused_versions
from shoal.model.objects import ConfigObj, SecretObj, Service
from shoal.store import Store


class VersionPruner:
    def __init__(self, store: Store):
        self.store = store
        self._task_pins: Optional[dict[str, frozenset[Pin]]] = None  # service id -> pins; None: not tracking

    def prune(self, changed_services: Iterable[str]) -> None:
        """Drop the unpinned old versions. `changed_services`: ids of services whose tasks may have
        changed since the last call (removed services included)."""
        st = self.store
        holders: list[Union[ConfigObj, SecretObj]] = [o for o in st.all(ConfigObj) if o.older_versions]
        holders += [o for o in st.all(SecretObj) if o.older_versions]
        if not holders:
            self._task_pins = None
            return
        if self._task_pins is None:
            self._task_pins = {}
            changed_services = st.service_ids_with_tasks()
        for sid in changed_services:
            pins = live_task_pins(st.tasks_of_service(sid))
            if pins:
                self._task_pins[sid] = pins
            else:
                self._task_pins.pop(sid, None)
        pinned = service_pins(st.all(Service)).union(*self._task_pins.values())
        kinds = {id(o): CONFIG if isinstance(o, ConfigObj) else SECRET for o in holders}
        drop = unused_versions({(kinds[id(o)], o.name): o.older_versions for o in holders}, pinned)
        for o in holders:
            gone = drop.get((kinds[id(o)], o.name))
            if gone:
                kept = {v: d for v, d in o.older_versions.items() if v not in gone}
                st.put(o.model_copy(update={"older_versions": kept}))
