"""Where each node's Shoal/stack volumes are, as the agents' heartbeats report them.

Local named volumes live on one node's disk, so the manager remembers, per node, the
volumes its engine holds: the heartbeats' facts, kept in the store (`NodeFacts`). They
feed the scheduler's volume filter (`volume_nodes`).
"""
from __future__ import annotations

from typing import Iterable

from shoal.model.objects import Node, NodeFacts, Service
from shoal.store import Store

NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb", "smb3"})


def is_node_local(vol: dict) -> bool:
    """Does the volume's data live on its node's disk? (local driver, not a network mount)."""
    if (vol.get("driver") or "local") != "local":
        return False
    opts = vol.get("options") or {}
    return (opts.get("type") or "").lower() not in NETWORK_FS


class VolumeRegistry:
    """Reads the volumes each node's heartbeats reported (`NodeFacts.volumes`, in the store: a
    task whose data is on a node that is down still waits for that node, across restarts)."""

    def __init__(self, store: Store):
        self.store = store

    def forget(self, node_id: str, names: Iterable[str]) -> None:
        """Volumes removed on a node (by `volume rm`/`prune`) before its next heartbeat says so."""
        gone = set(names)
        facts = self.store.get(NodeFacts, node_id)
        if facts is None:
            return
        kept = [v for v in facts.volumes if v.name not in gone]
        if len(kept) != len(facts.volumes):
            self.store.put(facts.model_copy(update={"volumes": kept}), quiet=True)

    def by_node(self) -> dict[str, list[dict]]:
        known = {n.id for n in self.store.all(Node)}
        return {f.id: [v.model_dump() for v in f.volumes]
                for f in sorted(self.store.all(NodeFacts), key=lambda f: f.id) if f.id in known and f.volumes}

    def nodes_of(self, name: str) -> list[str]:
        return [n for n, vols in self.by_node().items() if any(v["name"] == name for v in vols)]

    def volume_nodes(self) -> dict[str, set[str]]:
        """Scheduler input: node-local volume name -> ids of the nodes that hold it.

        From the heartbeats' facts, and from the tasks themselves: a task that got a container
        on a node made its local named volumes there (the engine creates them at first mount),
        which the manager knows at once — a heartbeat says so only later (facts are sent when
        they change, up to a period after), and an update right after a deploy must not miss it.
        A volume is only removed (`volume rm`) when no service mounts it."""
        out: dict[str, set[str]] = {}
        for node_id, vols in self.by_node().items():
            for v in vols:
                if is_node_local(v):
                    out.setdefault(v["name"], set()).add(node_id)
        nodes = {n.id for n in self.store.all(Node)}
        for svc in self.store.all(Service):
            if svc.spec.mode in ("global", "global-job"):
                continue
            for t in self.store.tasks_of_service(svc.id):
                if t.node_id not in nodes or not t.status.container_id:
                    continue
                # the task's own mounts: an older version of the service may have had none
                # (the book's v4 database had no volume; v5's must not be pinned to its node)
                for m in t.spec.container.mounts:
                    if m.type == "volume" and m.source and (m.volume_driver or "local") == "local" \
                            and (m.volume_driver_opts.get("type") or "").lower() not in NETWORK_FS:
                        out.setdefault(m.source, set()).add(t.node_id)
        return out
