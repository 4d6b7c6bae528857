"""Who holds which address on each network: the manager gives every task and node its own.

A Shoal network spans nodes (one subnet, one VXLAN segment), so two containers on two
nodes must never get the same address: the engine's own IPAM, one per node, cannot know
that. The manager decides instead, when it places a task (the task's `addresses`), and
gives each node that holds a network an address of its own there (`node_addresses`).

Addresses are released lazily: the book remembers an owner for each address it gave and
an address is free again once its owner no longer holds it (the task ended or is gone,
the node left the network), checked when the search meets it.
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

from shoal.core import task_states as ts
from shoal.manager import allocator
from shoal.model.objects import NetworkObj, Node, Task
from shoal.store import Store

log = logging.getLogger("shoal.addresses")


class AddressBook:
    def __init__(self, store: Store):
        self.store = store
        self._owners: dict[str, dict[str, str]] = {}  # network id -> ip -> "t:<task id>" | "n:<node id>"
        self._cursor: dict[str, int] = {}
        self._loaded = False

    def _load(self) -> None:
        st = self.store
        nets = {n.spec.name: n for n in st.all(NetworkObj)}
        for net in nets.values():
            book = self._owners.setdefault(net.id, {})
            for node_id, ip in net.node_addresses.items():
                book[ip] = f"n:{node_id}"
        for sid in st.service_ids_with_tasks():
            for t in st.tasks_of_service(sid):
                if not t.addresses or ts.is_terminal(t.status.state):
                    continue
                for name, ip in t.addresses.items():
                    net = nets.get(name)
                    if net is not None:
                        self._owners.setdefault(net.id, {})[ip] = f"t:{t.id}"
        self._loaded = True

    def _holds(self, net: NetworkObj, ip: str, owner: str) -> bool:
        kind, _, oid = owner.partition(":")
        if kind == "t":
            t = self.store.get(Task, oid)
            return t is not None and t.addresses.get(net.spec.name) == ip and not ts.is_terminal(t.status.state)
        cur = self.store.get(NetworkObj, net.id)
        return cur is not None and cur.node_addresses.get(oid) == ip

    def _take(self, net: NetworkObj, owner: str, wanted: Optional[str] = None) -> str:
        """An address of `net` for `owner` (AllocationError when none is free)."""
        if not self._loaded:
            self._load()
        book = self._owners.setdefault(net.id, {})

        def in_use(ip: str) -> bool:
            held = book.get(ip)
            if held is None or held == owner:
                return False
            if self._holds(net, ip, held):
                return True
            del book[ip]
            return False

        if wanted:
            if in_use(wanted):
                raise allocator.AllocationError(f"address {wanted} is already in use on network {net.spec.name}")
            ip = wanted
        else:
            try:
                ip, self._cursor[net.id] = allocator.allocate_address(
                    net.subnet, net.gateway, in_use, self._cursor.get(net.id, 0))
            except allocator.AllocationError as e:
                raise allocator.AllocationError(f"network {net.spec.name}: {e}") from None
        book[ip] = owner
        return ip

    def for_task(self, t: Task, node_id: str) -> dict[str, str]:
        """The task's address on each of its Shoal networks (the ones it has already are kept).
        Also gives `node_id` its own address on those networks. AllocationError when a
        network has no free address: the task cannot be placed (its error says why)."""
        st = self.store
        out = dict(t.addresses)
        for att in t.spec.networks:
            net = st.by_name(NetworkObj, att.network)
            if net is None or not net.subnet or att.network in out:
                continue
            out[att.network] = self._take(net, f"t:{t.id}", att.ipv4_address)
        self.ensure_node(node_id, [a.network for a in t.spec.networks])
        return out

    def ensure_node(self, node_id: str, names: Iterable[str]) -> None:
        """Give the node an address on each of these networks where it has none."""
        st = self.store
        for name in names:
            net = st.by_name(NetworkObj, name)
            if net is None or not net.subnet or node_id in net.node_addresses:
                continue
            ip = self._take(net, f"n:{node_id}")
            st.put(net.model_copy(update={"node_addresses": {**net.node_addresses, node_id: ip}}))

    def settle_nodes(self, holders: dict[str, set[str]]) -> None:
        """Make each network's node addresses those of its holders (network name -> node ids):
        nodes that no longer hold it give theirs back, holders without one get one. A network
        that cannot give a holder an address is logged (its tasks' placement says it too)."""
        st = self.store
        nodes = {n.id for n in st.all(Node)}
        for net in st.all(NetworkObj):
            want = holders.get(net.spec.name, set()) & nodes
            kept = {nid: ip for nid, ip in net.node_addresses.items() if nid in want}
            if kept != net.node_addresses:
                net = st.put(net.model_copy(update={"node_addresses": kept}))
            for nid in sorted(want - set(kept)):
                try:
                    self.ensure_node(nid, [net.spec.name])
                except allocator.AllocationError as e:
                    log.error("node %s on %s: %s", nid, net.spec.name, e)
