"""Node heartbeats: who is alive, what each node says of itself, and who is down.

A heartbeat marks its node ready, records when it came (exactly, in memory: this manager
judges liveness; and in the store, `NodeFacts.last_heartbeat`, written in batches) and
updates the node's facts when they changed. A node's self-reported facts are checked and
bounded to that node: its address must be the one it joined with or the one it connects
from; engine subnets must be private networks (a node claiming 0.0.0.0/0 would stop
every network from being made); ports and volumes are only ever about that node; a
container on an attachable network must have an address of the node's own block of it
(a node cannot take over another's addresses, or a task's).

The judgement itself is pure (`core/liveness.py`); this loop applies it every half second.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Callable, Optional

from shoal.core.liveness import judge
from shoal.limits import HEARTBEAT_GRACE
from shoal.manager.metrics import ManagerMetrics
from shoal.model.objects import AttachedFact, ClusterObj, NetworkObj, Node, NodeDescription, NodeFacts, VolumeFact
from shoal.protocol import facts_digest
from shoal.store import Store

log = logging.getLogger("shoal.heartbeats")

FLUSH_EVERY = 1.0  # seconds between batched writes of heartbeat times
SILENT_PERIODS = 2.0  # a node not heard for this many periods gets no new tasks (see silent)
MAX_HEARTBEATS_PER_SECOND = 200.0  # see Heartbeats.period
# Subnets an engine may report as its own (Docker's address pools are private ranges).
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]
MIN_PREFIX = 12


def bounded_subnets(claimed: list[str]) -> tuple[list[str], list[str]]:
    """(kept, refused): an engine's own subnets, as far as they can be: private, /12 or longer."""
    kept, refused = [], []
    for s in claimed:
        try:
            net = ipaddress.ip_network(s, strict=False)
        except ValueError:
            refused.append(s)
            continue
        if net.version == 4 and net.prefixlen >= MIN_PREFIX and any(net.subnet_of(p) for p in PRIVATE):
            kept.append(str(net))
        else:
            refused.append(s)
    return sorted(set(kept)), refused


def bounded_ports(claimed: dict[str, str]) -> dict[str, str]:
    """Only well-formed `proto/port` keys."""
    out = {}
    for k, v in claimed.items():
        proto, _, port = k.partition("/")
        if proto in ("tcp", "udp", "sctp") and port.isdigit() and 1 <= int(port) <= 65535:
            out[k] = v[:200]
    return out


class Heartbeats:
    def __init__(self, store: Store, on_subnets_changed: Callable[[], None] = lambda: None,
                 metrics: Optional[ManagerMetrics] = None):
        self.store = store
        self.metrics = metrics or ManagerMetrics()
        self.on_subnets_changed = on_subnets_changed
        self.started = time.time()
        self.judging = True  # this manager judges nodes down (the leader; see ManagerServer._lead)
        self.last_seen: dict[str, float] = {}  # node id -> time of its last heartbeat (this process)
        self._unsaved: set[str] = set()
        self._stalls: list[tuple[float, float]] = []  # (when, seconds) this loop was held up
        self._refused: dict[str, str] = {}  # node id -> the last refusal logged (log each once)
        self._told: list[tuple[float, float]] = [(0.0, 0.0)]  # (when, period) each time the period told changed
        self._managers: Optional[tuple[float, list[str]]] = None  # (when read, the managers' addresses)

    # -- settings ----------------------------------------------------------------------
    def settings(self) -> ClusterObj:
        return self.store.get(ClusterObj, "cluster") or ClusterObj(id="cluster")

    def period(self) -> float:
        """The period agents beat at: the cluster's setting, stretched so that the manager hears
        at most MAX_HEARTBEATS_PER_SECOND (a thousand nodes beat every 5 s, not every 2 s: a
        manager busy with a big deploy must not find them late and call them down)."""
        return max(self.settings().heartbeat_period, len(self.last_seen) / MAX_HEARTBEATS_PER_SECOND)

    def _judging_period(self, now: float) -> float:
        """The longest period told to an agent recently: a node told to beat every 5 s is not
        judged by a shorter period set since (it hears of it at its next beat)."""
        current = self.period()
        self._told = [(t, p) for t, p in self._told if now - t < HEARTBEAT_GRACE * p + 1] or [(now, current)]
        return max([current] + [p for _, p in self._told])

    def down_after(self) -> float:
        return self.period() * HEARTBEAT_GRACE

    # -- a heartbeat -------------------------------------------------------------------
    def beat(self, node_id: str, description: NodeDescription, addr: str, peer: str,
             facts: Optional[tuple]) -> dict:
        """Record a heartbeat of `node_id` (a member: the API checked its certificate).
        `facts`: (engine subnets, ports in use, volumes[, attached containers]) or None."""
        now = time.time()
        st = self.store
        node = st.get(Node, node_id)
        if node is None or node_id in self.settings().removed_nodes:  # removed, or left meanwhile
            raise KeyError(node_id)
        previous = self.last_seen.get(node_id)
        self.last_seen[node_id] = now
        self._unsaved.add(node_id)
        self.metrics.heartbeats.inc()
        if previous is not None and now - previous > 1.5 * self.period():
            self.metrics.heartbeats_late.inc()
        new_addr = self._address(node, addr, peer)
        if node.state != "ready" or node.description != description or node.addr != new_addr or node.message:
            if node.state != "ready":
                log.info("node %s (%s) is ready", node.description.hostname or description.hostname, node_id)
            st.put(node.model_copy(update={"description": description, "state": "ready", "addr": new_addr,
                                           "message": ""}))
        current = st.get(NodeFacts, node_id)
        if facts is not None:
            self._facts(node_id, current, *facts)
            current = st.get(NodeFacts, node_id)
        s = self.settings()
        period = self.period()
        if period != self._told[-1][1]:
            self._told.append((now, period))
        return {"heartbeat_period": period, "down_after": period * HEARTBEAT_GRACE,
                "cert_expiry": s.cert_expiry, "managers": self._managers_for_beat(), "role": node.role,
                "facts_digest": _digest_of(current)}

    def _address(self, node: Node, claimed: str, peer: str) -> str:
        """The node's address: what it joined with, unless it now connects from another one
        (and says so); a claim that is neither is refused (logged), never used."""
        if not claimed or claimed == node.addr:
            return node.addr or _ip(peer)
        if claimed == _ip(peer):
            return claimed
        self._refuse(node.id, f"address {claimed!r} refused: the node joined with {node.addr or '-'} "
                              f"and connects from {peer or '-'}")
        return node.addr or _ip(peer)

    def _facts(self, node_id: str, current: Optional[NodeFacts], subnets: list[str], ports: dict[str, str],
               volumes: list[VolumeFact], attached: list[AttachedFact] | tuple = ()) -> None:
        kept, refused = bounded_subnets(subnets)
        if refused:
            self._refuse(node_id, f"engine subnets refused (not private /{MIN_PREFIX} or longer): "
                                  f"{', '.join(refused[:5])}")
        ports = bounded_ports(ports)
        attached, wrong = self._own_attached(node_id, attached)
        if wrong:
            self._refuse(node_id, "containers refused (not in the node's block of an attachable network): "
                                  + ", ".join(f"{a.name} {a.ip} on {a.network}" for a in wrong[:5]))
        base = current or NodeFacts(id=node_id)
        new = base.model_copy(update={"engine_subnets": kept, "ports_in_use": ports, "volumes": volumes,
                                      "attached": attached})
        if current is None or (new.engine_subnets, new.ports_in_use, new.volumes, new.attached) != (
                current.engine_subnets, current.ports_in_use, current.volumes, current.attached):
            new = new.model_copy(update={"last_heartbeat": self.last_seen.get(node_id, 0.0)})
            self.store.put(new, quiet=True)
            self._unsaved.discard(node_id)
            if current is None or current.engine_subnets != kept:
                self.on_subnets_changed()

    def _own_attached(self, node_id: str, attached: list[AttachedFact]
                      ) -> tuple[list[AttachedFact], list[AttachedFact]]:
        """(kept, refused): containers with an address of this node's block of their network."""
        if not attached:
            return [], []
        blocks: dict[str, Optional[ipaddress.IPv4Network]] = {}
        kept, wrong = [], []
        for a in attached:
            if a.network not in blocks:
                net = self.store.by_name(NetworkObj, a.network)
                block = net.attach_ranges.get(node_id) if net is not None and net.spec.attachable else None
                blocks[a.network] = ipaddress.IPv4Network(block, strict=False) if block else None
            block = blocks[a.network]
            (kept if block is not None and ipaddress.IPv4Address(a.ip) in block else wrong).append(a)
        return kept, wrong

    def _refuse(self, node_id: str, why: str) -> None:
        if self._refused.get(node_id) != why:
            self._refused[node_id] = why
            log.warning("node %s: %s", node_id, why)

    def managers(self) -> list[str]:
        """`addr:port` of every manager (what agents fail over between)."""
        return sorted(f"{n.addr}:{n.port}" for n in self.store.all(Node)
                      if n.role == "manager" and n.addr and n.port)

    def _managers_for_beat(self) -> list[str]:
        """`managers()` for every heartbeat's answer: read from the nodes at most once a second
        (1,000 nodes beating walked 1,000 nodes each), not once per heartbeat."""
        now = time.monotonic()
        if self._managers is None or now - self._managers[0] >= 1.0:
            self._managers = (now, self.managers())
        return self._managers[1]

    def forget(self, node_id: str) -> None:
        self.last_seen.pop(node_id, None)
        self._unsaved.discard(node_id)

    # -- the loop ----------------------------------------------------------------------
    def stalled(self, now: float) -> float:
        """Seconds this process was stuck within the last judgement window."""
        window = self.down_after()
        return sum(lag for at, lag in self._stalls if now - at < window + lag)

    def lead(self, now: float) -> None:
        """This manager starts judging (it became the leader): every node gets the grace a
        manager's start gives, as it may have been beating to another manager."""
        self.started = now
        self.judging = True

    def _heard(self, since: float = 0.0) -> dict[str, float]:
        """When each node was last heard, by this manager or (through the store) another
        manager; times at or before `since` are left out (judging passes the time it began to
        judge: older times would judge a node down at once after a restart or a change of
        leader, which gets the start's grace instead)."""
        # this manager's own times before `since` are as stale as the store's: a node whose
        # heartbeats went to another manager meanwhile was judged down at once by a new leader
        # that had heard it before (found in the lab)
        seen = {k: v for k, v in self.last_seen.items() if v > since}
        for f in self.store.all(NodeFacts):
            if f.last_heartbeat > max(seen.get(f.id, 0.0), since):
                seen[f.id] = f.last_heartbeat
        return seen

    def silent(self, now: float) -> set[str]:
        """Ready nodes not heard from (by any manager) for SILENT_PERIODS heartbeat periods: not
        judged down yet (that takes HEARTBEAT_GRACE periods, more after a leader's start), but
        given no new tasks meanwhile -- a scale right after a node died does not place replicas
        on it, to be replaced once it is judged down (Swarm does)."""
        limit = now - SILENT_PERIODS * self._judging_period(now)
        heard = self._heard()
        return {n.id for n in self.store.all(Node) if n.state == "ready" and heard.get(n.id, 0.0) < limit}

    def check(self, now: float) -> list[str]:
        """Mark silent nodes down; the ids marked."""
        verdicts = judge(self.store.all(Node), self._heard(self.started), now, self.started, self._judging_period(now),
                         HEARTBEAT_GRACE, self.stalled(now))
        marked: list[str] = []
        if not verdicts:
            return marked
        with self.store.txn():
            for node_id, why in verdicts:
                n = self.store.get(Node, node_id)
                if n is None:
                    continue
                log.warning("node %s (%s) is down: %s", n.description.hostname, n.id, why)
                self.store.put(n.model_copy(update={"state": "down", "message": why}))
                self.metrics.nodes_down.inc()
                marked.append(node_id)
        return marked

    def flush(self) -> None:
        """Write the heartbeat times heard since the last flush (one transaction, quiet)."""
        if not self._unsaved:
            return
        ids, self._unsaved = self._unsaved, set()
        with self.store.txn():
            for node_id in ids:
                if self.store.get(Node, node_id) is None:
                    continue
                f = self.store.get(NodeFacts, node_id) or NodeFacts(id=node_id)
                self.store.put(f.model_copy(update={"last_heartbeat": self.last_seen.get(node_id, 0.0)}),
                               quiet=True)

    async def run(self) -> None:
        tick = 0.5
        last_flush = time.monotonic()
        while True:
            t = time.monotonic()
            await asyncio.sleep(tick)
            lag = time.monotonic() - t - tick
            if lag > 0.5:
                self._stalls.append((time.time(), lag))
                del self._stalls[:-100]
            try:
                if self.judging:
                    self.check(time.time())
                if time.monotonic() - last_flush >= FLUSH_EVERY:
                    last_flush = time.monotonic()
                    self.flush()
            except Exception:  # noqa: BLE001 - a bad pass must not stop liveness
                log.exception("heartbeat pass failed")


def _digest_of(facts: Optional[NodeFacts]) -> str:
    if facts is None:
        return ""
    return facts_digest(facts.engine_subnets, facts.ports_in_use, [v.model_dump() for v in facts.volumes],
                        [a.model_dump() for a in facts.attached])


def _ip(peer: str) -> str:
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        return ""
