"""The overlay's peers: for each network, every endpoint on it and the node it lives on, as a log.

A node forwards a frame for another node's container only to where the manager says that
container is: each agent programs a permanent forwarding and neighbour entry per remote
endpoint (no multicast, no learning). An endpoint is a task placed on a node with an
address on the network, from its placement until it ends, whether or not it takes traffic
(a starting replica already talks to its database), each node's own address on the
network, and on an attachable network every address of each node's block (the containers
users start there with `docker run`, whose MAC the engine derives from the address as the
manager's are).

The table is O(tasks) and every node on a network needs it, so it travels as the endpoint
table does (shoal/manager/change_log.py): agents follow a log of small events from their
position. Sent whole per network in every answer, a burst of 100,000 placements over
1,000 nodes made the manager send ~10^10 entries and never converge. The events:

    ["n", k, node id, address]   node k's underlay address ("" while it is down or gone)
    ["w", j, name]               network j
    ["wx", j]                    network j is gone, with its entries
    [j, ip, k]                   endpoint `ip` on network j lives on node k
    ["-", j, ip]                 endpoint `ip` on network j is gone

Nodes and networks are numbered by the log so that an endpoint event is ~25 bytes. The
log follows the store in O(changes) for tasks; nodes and networks (few, and their changes
rare) are compared whole on each sync.
"""
from __future__ import annotations

import json

from shoal.core import task_states as ts
from shoal.manager.allocator import block_addresses
from shoal.manager.change_log import ChangeLog
from shoal.model.objects import NetworkObj, Node, Task
from shoal.store import Store


def _entries(t: Task) -> dict[str, str]:
    """network name -> address, for a task that holds its addresses now."""
    if not t.node_id or not t.addresses or ts.is_terminal(t.status.state):
        return {}
    return t.addresses


def underlay_address(n: Node) -> str:
    """Where other nodes send a node's VXLAN frames ("" while it is down)."""
    return n.addr if n.state != "down" else ""


class PeerLog(ChangeLog):
    def __init__(self, store: Store):
        super().__init__()
        self.store = store
        self.feed = store.change_feed()
        self.node_num: dict[str, int] = {}  # node id -> k
        self.node_addr: dict[str, str] = {}  # node id -> its address as last sent
        self.net_num: dict[str, int] = {}  # network name -> j
        # network -> ip -> (holder, node id); the holder is a task id or "@<node id>" (the
        # node's own address), so that an address passed from an ending task to a new one is
        # dropped only by the task that holds it
        self.at: dict[str, dict[str, tuple[str, str]]] = {}
        self.of_task: dict[str, tuple[str, dict[str, str]]] = {}  # task id -> (node id, entries)
        # network -> each node's own address there (and its attachable block's) -> node id
        self.own: dict[str, dict[str, str]] = {}
        self._next = 0
        self._load()

    def _load(self) -> None:
        self.feed.take()
        events: list[str] = []
        self._nodes(events)
        self._networks(events)
        for sid in self.store.service_ids_with_tasks():
            for t in self.store.tasks_of_service(sid):
                self._task(t.id, t, events)
        self.seq = 1
        self.compact()

    def _num(self) -> int:
        self._next += 1
        return self._next

    # ------------------------------------------------------------------ follow the store
    def sync(self) -> bool:
        """Turn the store's changes since the last sync into events; True when there were any."""
        task_ids, _ = self.feed.take()
        events: list[str] = []
        self._nodes(events)
        self._networks(events)
        for tid in task_ids:
            self._task(tid, self.store.get(Task, tid), events)
        self.append(events)
        return bool(events)

    def _nodes(self, events: list[str]) -> None:
        seen = set()
        for n in self.store.all(Node):
            seen.add(n.id)
            self._node(n.id, underlay_address(n), events)
        for nid in [nid for nid in self.node_addr if nid not in seen]:
            self._node(nid, "", events)

    def _node(self, nid: str, addr: str, events: list[str]) -> int:
        k = self.node_num.get(nid)
        if k is None:
            k = self.node_num[nid] = self._num()
        elif self.node_addr.get(nid) == addr:
            return k
        self.node_addr[nid] = addr
        events.append(json.dumps(["n", k, nid, addr]))
        return k

    def _net(self, name: str, events: list[str]) -> int:
        j = self.net_num.get(name)
        if j is None:
            j = self.net_num[name] = self._num()
            events.append(json.dumps(["w", j, name]))
        return j

    def _networks(self, events: list[str]) -> None:
        names = set()
        for net in self.store.all(NetworkObj):
            name = net.spec.name
            names.add(name)
            want = {ip: nid for nid, ip in net.node_addresses.items()}
            for nid, block in net.attach_ranges.items():
                want.update((ip, nid) for ip in block_addresses(block))
            have = self.own.get(name)
            if want == have:
                continue
            have = have or {}
            for ip, nid in have.items():
                if want.get(ip) != nid:
                    self._drop(name, ip, "@" + nid, events)
            for ip, nid in want.items():
                self._put(name, ip, nid, "@" + nid, events)
            self.own[name] = want
        for name in [n for n in self.own if n not in names]:  # networks the store had, gone
            events.append(f'["wx",{self.net_num.pop(name)}]')
            self.at.pop(name, None)
            del self.own[name]

    def _task(self, tid: str, t: Task | None, events: list[str]) -> None:
        node, entries = ((t.node_id or ""), _entries(t)) if t is not None else ("", {})
        old_node, old = self.of_task.get(tid, ("", {}))
        if old == entries and old_node == node:
            return
        for net, ip in old.items():
            if entries.get(net) != ip or node != old_node:
                self._drop(net, ip, tid, events)
        for net, ip in entries.items():
            self._put(net, ip, node, tid, events)
        if entries:
            self.of_task[tid] = (node, dict(entries))
        else:
            self.of_task.pop(tid, None)

    def _put(self, net: str, ip: str, node: str, holder: str, events: list[str]) -> None:
        j = self._net(net, events)
        table = self.at.setdefault(net, {})
        if table.get(ip) == (holder, node):
            return
        if node not in self.node_num:  # a node the store no longer has (its entries still travel)
            self._node(node, "", events)
        table[ip] = (holder, node)
        events.append(f'[{j},"{ip}",{self.node_num[node]}]')

    def _drop(self, net: str, ip: str, holder: str, events: list[str]) -> None:
        table = self.at.get(net)
        cur = table.get(ip) if table else None
        if cur is None or cur[0] != holder:
            return
        del table[ip]
        events.append(f'["-",{self.net_num[net]},"{ip}"]')

    # ------------------------------------------------------------------ the change log
    def live_entries(self) -> int:
        return sum(len(t) for t in self.at.values()) + len(self.node_num) + len(self.net_num)

    def snapshot(self) -> list[str]:
        parts = [json.dumps(["n", k, nid, self.node_addr.get(nid, "")]) for nid, k in self.node_num.items()]
        parts += [json.dumps(["w", j, name]) for name, j in self.net_num.items()]
        for name, table in self.at.items():
            j = self.net_num[name]
            parts += [f'[{j},"{ip}",{self.node_num[node]}]' for ip, (_h, node) in table.items()]
        return parts

    # --------------------------------------------------------------------- read
    def peers(self, net: NetworkObj | str, node_id: str) -> list[list[str]]:
        """[address, its node's underlay address] of every endpoint of `net` not on `node_id`,
        sorted (what an agent's copy of the log gives; for tests and debugging)."""
        name = net if isinstance(net, str) else net.spec.name
        return sorted([ip, self.node_addr.get(node, "")] for ip, (_h, node) in self.at.get(name, {}).items()
                      if node != node_id and self.node_addr.get(node))
