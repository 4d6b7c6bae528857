"""The agent's copy of the cluster's endpoint table, kept by replaying the manager's log.

See shoal/manager/endpoint_log.py for the events. The agent sends back the position it
has (epoch and seq) with each long poll, and gets only the events after it.
"""
from __future__ import annotations

from typing import Any


class EndpointTable:
    def __init__(self) -> None:
        self.epoch = ""
        self.seq = 0
        self.meta: dict[int, dict] = {}  # service number -> meta
        self.backends: dict[int, dict[int, list]] = {}  # service number -> replica number -> addresses
        self.service_of: dict[int, int] = {}  # replica number -> service number

    @property
    def position(self) -> str:
        return f"{self.epoch}:{self.seq}" if self.epoch else ""

    def apply(self, update: dict[str, Any]) -> bool:
        """Apply one answer's `endpoints` part; True when the table changed."""
        fresh = bool(update.get("full")) or update.get("epoch") != self.epoch
        if fresh:
            self.meta, self.backends, self.service_of = {}, {}, {}
        events = update.get("events") or []
        meta, backends, service_of = self.meta, self.backends, self.service_of
        for ev in events:
            head = ev[0]
            if head == "s":
                meta[ev[1]] = ev[2]
                backends.setdefault(ev[1], {})
            elif head == "-":
                k = service_of.pop(ev[1], None)
                if k is not None:
                    backends.get(k, {}).pop(ev[1], None)
            elif head == "x":
                meta.pop(ev[1], None)
                for h in backends.pop(ev[1], {}):
                    service_of.pop(h, None)
            else:  # [k, h, ip, …]
                backends.setdefault(head, {})[ev[1]] = ev[2:]
                service_of[ev[1]] = head
        self.epoch = update.get("epoch", "")
        self.seq = int(update.get("seq", 0))
        return bool(events) or fresh

    def entries(self) -> list[dict]:
        """Every service with its backends' addresses, the shape the datapath builds its rules from."""
        out = []
        for k, meta in self.meta.items():
            nets = meta.get("networks") or []
            out.append({**meta, "backends": [{"addresses": addresses_of(nets, ips)}
                                             for ips in self.backends.get(k, {}).values()]})
        return out


def addresses_of(networks: list[str], ips: list) -> dict[str, str]:
    """A replica's addresses by network, from the log's positional form."""
    if not networks:
        return {"": ips[0]} if ips and ips[0] else {}
    return {n: ip for n, ip in zip(networks, ips) if ip}
