"""Who holds which address on each network: the manager gives every task and node its own.

A Shoal network spans nodes (one subnet, one VXLAN segment), so two containers on two
nodes must never get the same address: the engine's own IPAM, one per node, cannot know
that. The manager decides instead, when it places a task (the task's `addresses`), and
gives each node that holds a network an address of its own there (`node_addresses`), and
on an attachable network a block of addresses for the containers users start on that node
with `docker run --network` (`attach_ranges`: the node's engine gives those out).

Addresses are released lazily: the book remembers an owner for each address it gave and
an address is free again once its owner no longer holds it (the task ended or is gone,
the node left the network), checked when the search meets it.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Iterable, Optional

from shoal.core import task_states as ts
from shoal.manager import allocator
from shoal.model.objects import NetworkObj, Node, Task
from shoal.store import Store

log = logging.getLogger("shoal.addresses")


def _in_block(ip: str, block: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(block, strict=False)


class AddressBook:
    def __init__(self, store: Store):
        self.store = store
        self._owners: dict[str, dict[str, str]] = {}  # network id -> ip -> "t:<task id>" | "n:<node id>"
        self._cursor: dict[str, int] = {}
        self._loaded = False
        self._blockless: set[tuple[str, str]] = set()  # (network id, node id) told without a block

    def _load(self) -> None:
        st = self.store
        nets = {n.spec.name: n for n in st.all(NetworkObj)}
        for net in nets.values():
            book = self._owners.setdefault(net.id, {})
            for node_id, ip in net.node_addresses.items():
                book[ip] = f"n:{node_id}"
            for node_id, block in net.attach_ranges.items():
                for ip in allocator.block_addresses(block):
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
        if cur is None:
            return False
        block = cur.attach_ranges.get(oid)
        return cur.node_addresses.get(oid) == ip or (block is not None and _in_block(ip, block))

    def _in_use(self, net: NetworkObj, book: dict[str, str], ip: str, owner: Optional[str] = None) -> bool:
        """Whether `ip` is held by someone other than `owner` (an owner that no longer holds it
        is forgotten on the way)."""
        held = book.get(ip)
        if held is None or held == owner:
            return False
        if self._holds(net, ip, held):
            return True
        del book[ip]
        return False

    def _take(self, net: NetworkObj, owner: str, wanted: Optional[str] = None) -> str:
        """An address of `net` for `owner` (AllocationError when none is free)."""
        if not self._loaded:
            self._load()
        book = self._owners.setdefault(net.id, {})

        def in_use(ip: str) -> bool:
            return self._in_use(net, book, ip, owner)

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

    def _take_block(self, net: NetworkObj, owner: str) -> str:
        """A block of `net`'s addresses for `owner` (a node): AllocationError when none is free."""
        if not self._loaded:
            self._load()
        book = self._owners.setdefault(net.id, {})

        def in_use(ip: str) -> bool:
            return self._in_use(net, book, ip)

        # Blocks take at most half of the subnet (the rest is the tasks' and nodes'): full
        # blocks for the first quarter, then halves, then quarters, then none.
        budget = ipaddress.ip_network(net.subnet, strict=False).num_addresses // 2
        used = sum(ipaddress.ip_network(b, strict=False).num_addresses for b in net.attach_ranges.values())
        size = allocator.attach_block_size(net.subnet)
        for share in (0.5, 0.75, 1.0):
            if size >= 4 and used + size <= budget * share:
                break
            size //= 2
        else:
            raise allocator.AllocationError(
                f"network {net.spec.name}: half of {net.subnet} is already in blocks for users' containers "
                f"(a larger subnet leaves more)")
        while True:  # a smaller block when no full one is free
            try:
                block = allocator.allocate_block(net.subnet, net.gateway, in_use, size)
                break
            except allocator.AllocationError as e:
                if size <= 4:
                    raise allocator.AllocationError(f"network {net.spec.name}: {e}") from None
                size //= 2
        for ip in allocator.block_addresses(block):
            book[ip] = owner
        return block

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
        """Give the node an address on each of these networks where it has none (and its block
        of an attachable network's addresses)."""
        st = self.store
        for name in names:
            net = st.by_name(NetworkObj, name)
            if net is None or not net.subnet:
                continue
            has_block = node_id in net.attach_ranges or not net.spec.attachable
            if node_id in net.node_addresses and has_block:
                continue
            update: dict = {}
            if node_id not in net.node_addresses:
                update["node_addresses"] = {**net.node_addresses, node_id: self._take(net, f"n:{node_id}")}
            if not has_block:  # after the node's address, which the block must not hold
                try:
                    update["attach_ranges"] = {**net.attach_ranges,
                                               node_id: self._take_block(net, f"n:{node_id}")}
                except allocator.AllocationError as e:
                    # The node still holds the network (its tasks need it); its engine gives
                    # out no address there, so `docker run --network` is refused on it.
                    if (net.id, node_id) not in self._blockless:
                        self._blockless.add((net.id, node_id))
                        log.warning("node %s on %s: no block of addresses for its own containers: %s",
                                    node_id, net.spec.name, e)
            if update:
                st.put(net.model_copy(update=update))

    def settle_nodes(self, holders: dict[str, set[str]]) -> None:
        """Make each network's node addresses those of its holders (network name -> node ids):
        nodes that no longer hold it give theirs back, holders without one get one. A network
        that cannot give a holder an address is logged (its tasks' placement says it too)."""
        st = self.store
        nodes = {n.id for n in st.all(Node)}
        for net in st.all(NetworkObj):
            want = holders.get(net.spec.name, set()) & nodes
            kept = {nid: ip for nid, ip in net.node_addresses.items() if nid in want}
            blocks = {nid: b for nid, b in net.attach_ranges.items() if nid in want and net.spec.attachable}
            if kept != net.node_addresses or blocks != net.attach_ranges:
                net = st.put(net.model_copy(update={"node_addresses": kept, "attach_ranges": blocks}))
            lacking = want - set(kept)
            if net.spec.attachable:
                lacking |= want - set(blocks)
            for nid in sorted(lacking):
                try:
                    self.ensure_node(nid, [net.spec.name])
                except allocator.AllocationError as e:
                    log.error("node %s on %s: %s", nid, net.spec.name, e)
