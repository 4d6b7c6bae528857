"""The overlay's peers: for each network, every endpoint on it and the node it lives on.

A node forwards a frame for another node's container only to where the manager says that
container is: each agent programs a permanent forwarding and neighbour entry per remote
endpoint (no multicast, no learning). An endpoint is a task placed on a node with an
address on the network, from its placement until it ends, whether or not it takes traffic
(a starting replica already talks to its database), and each node's own address on the
network. Kept from the store's change feed, in O(changes); a network's version moves when
its endpoints do, so an agent is sent a network's peers again only when they changed.
"""
from __future__ import annotations

from shoal.core import task_states as ts
from shoal.model.objects import NetworkObj, Node, Task
from shoal.store import Store


def _entries(t: Task) -> dict[str, str]:
    """network name -> address, for a task that holds its addresses now."""
    if not t.node_id or not t.addresses or ts.is_terminal(t.status.state):
        return {}
    return t.addresses


class PeerTable:
    def __init__(self, store: Store):
        self.store = store
        self.eps: dict[str, dict[str, tuple[str, str]]] = {}  # network -> task id -> (address, node id)
        self.of_task: dict[str, dict[str, str]] = {}  # task id -> its entries (network -> address)
        self.node_of: dict[str, str] = {}  # task id -> node id
        self.version: dict[str, int] = {}
        for sid in store.service_ids_with_tasks():
            for t in store.tasks_of_service(sid):
                self._set(t.id, _entries(t), t.node_id or "")

    def _set(self, tid: str, entries: dict[str, str], node_id: str) -> set[str]:
        old = self.of_task.get(tid, {})
        old_node = self.node_of.get(tid, "")
        if old == entries and (not entries or old_node == node_id):
            return set()
        changed = set(old) | set(entries)
        for net in old:
            self.eps.get(net, {}).pop(tid, None)
        for net, ip in entries.items():
            self.eps.setdefault(net, {})[tid] = (ip, node_id)
        if entries:
            self.of_task[tid], self.node_of[tid] = dict(entries), node_id
        else:
            self.of_task.pop(tid, None)
            self.node_of.pop(tid, None)
        for net in changed:
            self.version[net] = self.version.get(net, 0) + 1
        return changed

    def update(self, task_ids: set[str]) -> set[str]:
        """Follow these tasks' changes; the networks whose endpoints changed."""
        changed: set[str] = set()
        for tid in task_ids:
            t = self.store.get(Task, tid)
            changed |= self._set(tid, _entries(t) if t is not None else {}, (t.node_id or "") if t else "")
        return changed

    def holders(self, net: NetworkObj) -> set[str]:
        """The nodes with an endpoint on the network (they are told its peers)."""
        return {node for _ip, node in self.eps.get(net.spec.name, {}).values()} | set(net.node_addresses)

    def peers(self, net: NetworkObj, node_id: str) -> list[list[str]]:
        """[address, node's overlay address] of every endpoint of `net` not on `node_id`, sorted."""
        underlay: dict[str, str] = {}

        def addr_of(nid: str) -> str:
            a = underlay.get(nid)
            if a is None:
                n = self.store.get(Node, nid)
                a = underlay[nid] = n.addr if n is not None and n.state != "down" else ""
            return a

        out = [[ip, addr_of(nid)] for ip, nid in self.eps.get(net.spec.name, {}).values() if nid != node_id]
        out += [[ip, addr_of(nid)] for nid, ip in net.node_addresses.items() if nid != node_id]
        return sorted(p for p in out if p[1])
