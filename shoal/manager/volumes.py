"""Where each node's Shoal/stack volumes are, as the agents' heartbeats report them.

Local named volumes live on one node's disk, so the manager remembers, per node, the
volumes its engine holds. The record is kept in the store's metadata (it survives a
manager restart, so a task whose data is on a node that is down still waits for that
node) and feeds the scheduler's volume filter (`volume_nodes`).
"""
from __future__ import annotations

import json
from typing import Callable, Iterable, Optional

from shoal.store import Store

META_KEY = "volumes_by_node"
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb", "smb3"})


def is_node_local(vol: dict) -> bool:
    """Does the volume's data live on its node's disk? (local driver, not a network mount)."""
    if (vol.get("driver") or "local") != "local":
        return False
    opts = vol.get("options") or {}
    return (opts.get("type") or "").lower() not in NETWORK_FS


class VolumeRegistry:
    def __init__(self, store: Store, known_nodes: Optional[Callable[[], Iterable[str]]] = None):
        self.store = store
        self.known_nodes = known_nodes
        self._by_node: dict[str, list[dict]] = {}
        raw = store.meta_get(META_KEY)
        if raw:
            try:
                self._by_node = {k: list(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError):
                self._by_node = {}

    def _save(self) -> None:
        self.store.meta_set(META_KEY, json.dumps(self._by_node, sort_keys=True).encode())

    def report(self, node_id: str, volumes: list[dict]) -> None:
        vols = sorted(({**v, "node_id": node_id} for v in volumes if v.get("name")), key=lambda v: v["name"])
        if self._by_node.get(node_id) != vols:
            self._by_node[node_id] = vols
            self._save()

    def forget(self, node_id: str, names: Iterable[str]) -> None:
        """Volumes removed on a node (by `volume rm`/`prune`) before its next heartbeat says so."""
        gone = set(names)
        vols = self._by_node.get(node_id, [])
        kept = [v for v in vols if v["name"] not in gone]
        if len(kept) != len(vols):
            self._by_node[node_id] = kept
            self._save()

    def _nodes(self) -> Optional[set[str]]:
        return set(self.known_nodes()) if self.known_nodes is not None else None

    def by_node(self) -> dict[str, list[dict]]:
        known = self._nodes()
        return {n: list(v) for n, v in sorted(self._by_node.items()) if known is None or n in known}

    def nodes_of(self, name: str) -> list[str]:
        return [n for n, vols in self.by_node().items() if any(v["name"] == name for v in vols)]

    def volume_nodes(self) -> dict[str, set[str]]:
        """Scheduler input: node-local volume name -> ids of the nodes that hold it."""
        out: dict[str, set[str]] = {}
        for node_id, vols in self.by_node().items():
            for v in vols:
                if is_node_local(v):
                    out.setdefault(v["name"], set()).add(node_id)
        return out
