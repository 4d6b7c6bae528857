"""The agent's copy of the overlay's peers, kept by replaying the manager's peer log.

See shoal/manager/peers.py for the events. The agent sends back the position it has
(`pp`, epoch and seq) with each long poll, and gets only the events after it.
"""
from __future__ import annotations

from typing import Any


class PeerTable:
    def __init__(self) -> None:
        self.epoch = ""
        self.seq = 0
        self.nodes: dict[int, tuple[str, str]] = {}  # k -> (node id, underlay address)
        self.net_name: dict[int, str] = {}  # j -> network name
        self.at: dict[str, dict[str, int]] = {}  # network name -> endpoint ip -> node k

    @property
    def position(self) -> str:
        return f"{self.epoch}:{self.seq}" if self.epoch else ""

    def apply(self, update: dict[str, Any]) -> bool:
        """Apply one answer's `peers` part; True when the table changed."""
        if not update:
            return False
        fresh = bool(update.get("full")) or update.get("epoch") != self.epoch
        if fresh:
            self.nodes, self.net_name, self.at = {}, {}, {}
        events = update.get("events") or []
        for ev in events:
            head = ev[0]
            if head == "n":
                self.nodes[ev[1]] = (ev[2], ev[3])
            elif head == "w":
                self.net_name[ev[1]] = ev[2]
                self.at.setdefault(ev[2], {})
            elif head == "wx":
                name = self.net_name.pop(ev[1], None)
                if name is not None:
                    self.at.pop(name, None)
            elif head == "-":
                name = self.net_name.get(ev[1])
                if name is not None:
                    self.at.get(name, {}).pop(ev[2], None)
            else:  # [j, ip, k]
                name = self.net_name.get(head)
                if name is not None:
                    self.at.setdefault(name, {})[ev[1]] = ev[2]
        self.epoch = update.get("epoch", "")
        self.seq = int(update.get("seq", 0))
        return bool(events) or fresh

    def peers(self, network: str, node_id: str) -> list[tuple[str, str]]:
        """(endpoint ip, its node's underlay address) of every endpoint of `network` on a node
        other than `node_id` that is up, sorted."""
        out = []
        for ip, k in self.at.get(network, {}).items():
            nid, addr = self.nodes.get(k, ("", ""))
            if addr and nid != node_id:
                out.append((ip, addr))
        return sorted(out)
