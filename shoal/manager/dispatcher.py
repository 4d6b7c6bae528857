"""The dispatcher: what each node agent is told to run, and what it may report back.

An agent sees only its own node's tasks, and only the configs and secrets those
tasks mount, in the versions they pin (secrets decrypted here and sent over mutual
TLS). It may move its own tasks forward along the agent's column of the state table,
nothing else.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from shoal.core import task_states as ts
from shoal.manager.change_log import parse_position
from shoal.manager.cluster import Cluster
from shoal.manager.deflated import zlib_stream
from shoal.manager.endpoint_log import EndpointLog
from shoal.manager.errors import ApiError, Forbidden
from shoal.manager.metrics import ManagerMetrics
from shoal.manager.peers import PeerLog
from shoal.model.objects import ClusterObj, ConfigObj, NetworkObj, SecretObj, Service, Task, TaskStatus
from shoal.model.unchecked import unchecked
from shoal.store import Store
from shoal.store.base import InvalidObject

ENDPOINTS_PER_SECOND = 50_000.0  # see Dispatcher.news
ENDPOINTS_MAX_HOLD = 2.0
# A task moving forward on its node (accepted … running) needs no orchestrator pass unless
# its service is watched (see _watched_services): the store is told so (a quiet write), and
# the orchestrator's periodic full pass still sees everything.
QUIET_STATES = frozenset({ts.ACCEPTED, ts.PREPARING, ts.READY, ts.STARTING, ts.RUNNING})
OWN_ANSWERS_PER_SECOND = 2_000.0  # see Dispatcher.news
OWN_MAX_HOLD = 1.0
DEFLATE_MIN = 2048  # smaller answers go plain (the stream's framing and an inflater cost more than they save)

log = logging.getLogger("shoal.dispatcher")


@dataclass
class View:
    """What one node should be told now (see Dispatcher.view), before serialisation."""
    rev: int
    tasks: list[Task]
    configs: dict[str, ConfigObj]
    secrets: dict[str, SecretObj]
    networks: list[NetworkObj]
    own_key: str  # digest of the node's own part: tasks, configs, secrets, networks, history
    # Tasks of the node that ended on their own (complete/failed) and are still in their slot's
    # history: the agent keeps their stopped containers, for `service logs`, as Swarm does.
    history: list[str] = field(default_factory=list)
    # The versions of each config/secret above that the node's tasks pin (0: unpinned, the current one).
    config_versions: dict[str, list[int]] = field(default_factory=dict)
    secret_versions: dict[str, list[int]] = field(default_factory=dict)


def _ipv4(text: object) -> Optional[int]:
    """A dotted-quad IPv4 address as an integer (None: not one). inet_pton takes exactly the
    four decimal parts ipaddress takes, at a tenth of its cost (1 % of a deploy's reports)."""
    if type(text) is not str or text.count(".") != 3:
        return None
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):  # (ValueError: a NUL in it)
        return None


def _pinned_versions(tasks: list[Task]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """For each config and secret the tasks mount, the versions they pin (0: unpinned, current)."""
    configs: dict[str, set[int]] = {}
    secrets: dict[str, set[int]] = {}
    for t in tasks:
        for r in t.spec.container.configs:
            configs.setdefault(r.source, set()).add(r.version)
        for r in t.spec.container.secrets:
            secrets.setdefault(r.source, set()).add(r.version)
    return ({n: sorted(vs) for n, vs in configs.items()}, {n: sorted(vs) for n, vs in secrets.items()})


class Dispatcher:
    def __init__(self, store: Store, cluster: Cluster, metrics: Optional[ManagerMetrics] = None):
        self.store = store
        self.metrics = metrics or ManagerMetrics()
        self.cluster = cluster
        self.log = EndpointLog(store)
        self._feed = store.change_feed()
        self.peers = PeerLog(store)
        # node id -> (own key, when, task id -> version) of its last answer: when to pace the
        # next one, and the base of its delta
        self._sent: dict[str, tuple[str, float, dict[str, int]]] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._views: dict[str, tuple[tuple, View]] = {}  # node id -> (store sequences, its view then)
        self._task_node: dict[str, str] = {}  # task id -> its node (to wake it when the task goes)
        self._others: tuple = ()
        self._shapes: dict[str, tuple[int, str]] = {}  # network id -> (version, shape)
        # network id -> (version, shape, node addresses, blocks) as of the last sync
        self._nets: dict[str, tuple[int, str, dict[str, str], dict[str, str]]] = {}
        self._woken_seq: tuple[int, int] = (0, 0)
        self._reports: list[tuple[str, list[dict], asyncio.Future]] = []
        self._refused_addresses = 0
        self._subnets: dict[str, tuple[tuple[str, int], tuple[int, int]]] = {}  # see _subnet

    # -- assignments -----------------------------------------------------------------
    # An agent long-polls with the digest of its own part in the last answer it got (made
    # from object ids and versions, never from serialising the answer, so checking costs
    # O(its tasks)) and its position in the endpoint log; the answer is its own part (only
    # the changed tasks when the agent has the last answer) and the endpoint events it has
    # not seen (shared chunks).

    def view(self, node_id: str) -> "View":
        """The node's view, kept while none of its tasks, no network, config or secret was
        written since (a long poll looks at it on every wake; most wakes change nothing of it)."""
        st = self.store
        key = (st.node_seq(node_id), st.kind_seq(NetworkObj), st.kind_seq(ConfigObj), st.kind_seq(SecretObj))
        got = self._views.get(node_id)
        if got is not None and got[0] == key:
            return dataclasses.replace(got[1], rev=st.rev)
        v = self._make_view(node_id)
        if len(self._views) > 2 * len(self._waiters) + 64:
            self._views.clear()  # nodes gone
        self._views[node_id] = (key, v)
        return v

    def _make_view(self, node_id: str) -> "View":
        st = self.store
        mine = st.tasks_of_node(node_id)
        tasks = [t for t in mine if t.status.state not in ts.TERMINAL]
        history = sorted(t.id for t in mine if t.status.state in (ts.COMPLETE, ts.FAILED))
        config_names, secret_names, net_names = set(), set(), set()
        for t in tasks:
            c = t.spec.container
            if c.configs:
                config_names |= {r.source for r in c.configs}
            if c.secrets:
                secret_names |= {r.source for r in c.secrets}
            net_names |= {a.network for a in t.spec.networks}
        configs = {name: obj for name in sorted(config_names) if (obj := st.by_name(ConfigObj, name)) is not None}
        secrets = {name: obj for name in sorted(secret_names) if (obj := st.by_name(SecretObj, name)) is not None}
        # Its tasks' networks, and those it holds an address on (the routing mesh's).
        networks = [n for n in st.all(NetworkObj) if n.spec.name in net_names or node_id in n.node_addresses]
        # Compared only with digests this process sent (another manager's, or this one's before
        # a restart, never match: the node then gets its part whole), so Python's own hash of
        # the versions will do; writing them out as text for a sha256 was ~3 % of the
        # manager's time in a deploy.
        own = format(hash((tuple([(t.id, t.version) for t in tasks]),
                           tuple([(o.id, o.version) for o in configs.values()]),
                           tuple([(o.id, o.version) for o in secrets.values()]),
                           tuple([self._network_key(n, node_id) for n in networks]), tuple(history)))
                     & 0xFFFF_FFFF_FFFF_FFFF, "016x")
        config_versions, secret_versions = _pinned_versions(tasks)
        return View(st.rev, tasks, configs, secrets, networks, own, history,
                    config_versions=config_versions, secret_versions=secret_versions)

    def answer(self, node_id: str, v: "View", ep: str = "", known: Optional[str] = None, pp: str = "") -> str:
        """The assignments answer for view `v`, as JSON text; remembers what the node was sent."""
        return b"".join(self.answer_parts(node_id, v, ep, known, pp)[0]).decode()

    def answer_parts(self, node_id: str, v: "View", ep: str = "", known: Optional[str] = None,
                     pp: str = "", deflate: bool = False) -> tuple[list[bytes], bool]:
        """The answer as UTF-8 JSON in pieces: the node's own part, then the endpoint events
        after position `ep` ("epoch:seq" the agent has; "" for all) and the overlay's peer
        events after position `pp`, shared between answers; and whether it is deflated.

        When the agent's digest `known` is that of the last answer this node was sent, only
        the tasks that changed since are sent, with every task id (`"delta": true`): a node
        running 100 tasks is not re-sent all 100 each time one of them moves.

        With `deflate` (the agent accepts it) an answer of DEFLATE_MIN bytes or more is a
        zlib stream (shoal/manager/deflated.py): the logs' chunks compressed once for every
        node, the node's own part stored."""
        st = self.store
        sent = self._sent.get(node_id)
        versions = {t.id: t.version for t in v.tasks}
        if sent is not None and known is not None and sent[0] == known:
            tasks, delta = [t for t in v.tasks if sent[2].get(t.id) != t.version], True
        else:
            tasks, delta = v.tasks, False
        self.metrics.answers.labels("delta" if delta else "full").inc()
        configs, secrets = self._file_data(v)
        networks = json.dumps([self._network_for(n, node_id) for n in v.networks], default=str)
        settings = st.get(ClusterObj, "cluster")
        port = settings.data_path_port if settings is not None else 4789
        ids = f'"task_ids":{json.dumps(list(versions))},' if delta else ""
        head = (f'{{"rev":{v.rev},"delta":{"true" if delta else "false"},{ids}'
                f'"tasks":[{",".join(st.task_json(t) for t in tasks)}],'
                f'"configs":{json.dumps(configs)},"secrets":{json.dumps(secrets)},"networks":{networks},'
                f'"data_path_port":{port},'
                f'"history":{json.dumps(v.history)},"endpoints":').encode()
        epoch, seq = parse_position(ep)
        self.log.sync()
        part = self.log.since(epoch, seq)
        peers = self.peers.since(*parse_position(pp))
        self._sent[node_id] = (v.own_key, time.monotonic(), versions)
        tail = f',"digest":"{v.own_key}","ep":"{part.epoch}:{part.seq}","pp":"{peers.epoch}:{peers.seq}"}}'.encode()
        plain = [head, *part.parts(), b',"peers":', *peers.parts(), tail]
        if not deflate or sum(map(len, plain)) < DEFLATE_MIN:
            return plain, False
        items = [head, *part.items(self.log.pieces.piece), b',"peers":', *peers.items(self.peers.pieces.piece), tail]
        return zlib_stream(items), True

    # -- networks as one node sees them ---------------------------------------------
    # A network's object carries every holder's address (and block): 1,000 entries on a
    # network that spans 1,000 nodes, rewritten as each node takes its address. A node needs
    # only its own (the others travel in the peer log), so each node is sent, and keyed on,
    # the network without the others': a node taking its address changes no other's answer.

    def _shape(self, n: NetworkObj) -> str:
        """Digest of the network without its holders' addresses (cached per version)."""
        got = self._shapes.get(n.id)
        if got is not None and got[0] == n.version:
            return got[1]
        body = n.model_dump(mode="json", exclude={"node_addresses", "attach_ranges", "version", "updated_at"})
        shape = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self._shapes[n.id] = (n.version, shape)
        return shape

    def _network_key(self, n: NetworkObj, node_id: str) -> str:
        return f"{n.id}:{self._shape(n)}:{n.node_addresses.get(node_id, '')}:{n.attach_ranges.get(node_id, '')}"

    @staticmethod
    def _network_for(n: NetworkObj, node_id: str) -> dict:
        d = n.model_dump(mode="json", exclude={"node_addresses", "attach_ranges"})
        d["node_addresses"] = {node_id: n.node_addresses[node_id]} if node_id in n.node_addresses else {}
        if node_id in n.attach_ranges:  # (absent otherwise: an agent older than blocks refuses the key)
            d["attach_ranges"] = {node_id: n.attach_ranges[node_id]}
        return d

    def _network_wakes(self) -> set[str] | None:
        """Nodes whose view of a network changed since the last sync (None: every node's, when a
        network came, went or changed other than in its holders' addresses)."""
        wake: set[str] = set()
        seen = set()
        every = False
        for n in self.store.all(NetworkObj):
            seen.add(n.id)
            old = self._nets.get(n.id)
            if old is not None and old[0] == n.version:
                continue
            shape = self._shape(n)
            if old is None or old[1] != shape:
                every = True
            else:
                for mine, theirs in ((old[2], n.node_addresses), (old[3], n.attach_ranges)):
                    if mine != theirs:
                        wake |= {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}
            self._nets[n.id] = (n.version, shape, dict(n.node_addresses), dict(n.attach_ranges))
        for nid in [nid for nid in self._nets if nid not in seen]:
            del self._nets[nid]
            self._shapes.pop(nid, None)
            every = True
        return None if every else wake

    def _file_data(self, v: "View") -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        """The answer's configs and secrets, ``{name: {version: base64}}``: exactly the versions
        the node's tasks pin ("0": an unpinned ref, the current version). Secrets decrypted."""
        configs: dict[str, dict[str, str]] = {}
        for name, obj in v.configs.items():
            for version in v.config_versions.get(name, ()):
                data = obj.data_at(version)
                if data is not None:
                    configs.setdefault(name, {})[str(version)] = base64.b64encode(data).decode()
        secrets: dict[str, dict[str, str]] = {}
        for name in v.secrets:
            for version in v.secret_versions.get(name, ()):
                data = self.cluster.secret_bytes(name, version)
                if data is not None:
                    secrets.setdefault(name, {})[str(version)] = base64.b64encode(data).decode()
        return configs, secrets

    def news(self, node_id: str, v: "View", known: str | None, ep: str, pp: str = "") -> float:
        """When the node should be answered: 0 now, seconds to hold the answer back, or -1 when
        there is nothing new.

        News of the node's own part (tasks, configs, secrets, networks) is sent at once in a
        small cluster; with many nodes a node gets at most one answer every `nodes / 2,000` s
        (0.5 s at 1,000 nodes), so the manager answers at most ~2,000 polls a second however
        fast the store changes. Endpoint-only news (replicas starting elsewhere) and peer news
        (tasks placed elsewhere) wait `replicas / 50,000` s (2 s at most) since the node's
        last answer. An agent that has nothing yet, or another epoch, is answered at once."""
        sent = self._sent.get(node_id)
        epoch, seq = parse_position(ep)
        if v.own_key != known:
            if sent is None or not known or sent[0] != known:
                return 0.0
            interval = min(OWN_MAX_HOLD, len(self._waiters) / OWN_ANSWERS_PER_SECOND)
            return max(0.0, sent[1] + interval - time.monotonic())
        self.log.sync()
        p_epoch, p_seq = parse_position(pp)
        if not self.log.has_news(epoch, seq) and not self.peers.has_news(p_epoch, p_seq):
            return -1.0
        if sent is None or epoch != self.log.epoch or p_epoch != self.peers.epoch:
            return 0.0
        interval = min(ENDPOINTS_MAX_HOLD, self.log.live / ENDPOINTS_PER_SECOND)
        return max(0.0, sent[1] + interval - time.monotonic())

    def assignments(self, node_id: str, ep: str = "", known: Optional[str] = None, pp: str = "") -> dict[str, Any]:
        """The node's assignments as a dict (the same content `answer` sends)."""
        return json.loads(self.answer(node_id, self.view(node_id), ep, known, pp))

    # -- waking long polls -----------------------------------------------------------
    # A long poll waits on its node's event; `sync` (after every burst of store writes) sets
    # the events of the nodes whose own part changed, and of nodes with endpoint news only
    # once their hold has passed -- so a write wakes the polls it concerns, not all of them.

    def waiter(self, node_id: str) -> asyncio.Event:
        ev = self._waiters.get(node_id)
        if ev is None:
            ev = self._waiters[node_id] = asyncio.Event()
        return ev

    def sync(self) -> None:
        """Follow the store: endpoint events, and which nodes' polls to wake."""
        st = self.store
        task_ids, _ = self._feed.take()
        ep_news = self.log.sync() | self.peers.sync()
        wake: set[str] = set()
        for tid in task_ids:
            t = st.get(Task, tid)
            old = self._task_node.get(tid)
            node = t.node_id if t is not None else None
            if old is not None and old != node:
                wake.add(old)
            if node is not None:
                wake.add(node)
                self._task_node[tid] = node
            elif old is not None:
                del self._task_node[tid]
        net_wake = self._network_wakes()
        if net_wake is None:
            wake = set(self._waiters)
        else:
            wake |= net_wake
        others = self._others_key()
        if others != self._others:
            self._others = others
            wake = set(self._waiters)
        for node_id in wake:
            ev = self._waiters.get(node_id)
            if ev is not None:
                ev.set()
        if ep_news or (self.log.seq, self.peers.seq) != self._woken_seq:
            self._woken_seq = (self.log.seq, self.peers.seq)
            # Endpoint and peer news: polls whose hold is over are answered now; the others wake
            # at the end of their hold on their own (their wait's timeout).
            interval = min(ENDPOINTS_MAX_HOLD, self.log.live / ENDPOINTS_PER_SECOND)
            now = time.monotonic()
            for node_id, ev in self._waiters.items():
                sent = self._sent.get(node_id)
                if not ev.is_set() and (sent is None or sent[1] + interval <= now):
                    ev.set()

    def _others_key(self) -> tuple:
        """Changes when any config or secret is written (rare: every node re-checks)."""
        st = self.store
        return tuple(sum(o.version for o in st.all(cls)) + 1000003 * st.count(cls)
                     for cls in (ConfigObj, SecretObj))

    async def run(self) -> None:
        """Keep following the store (the manager runs this beside the long polls)."""
        seen = -1
        while True:
            await self.store.wait_for_change(seen, 1.0)
            await asyncio.sleep(0.02)  # one pass per burst of writes
            seen = self.store.rev
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - a bad pass must not stop the dispatcher
                log.exception("dispatcher pass failed")
                await asyncio.sleep(0.5)

    def report(self, node_id: str, updates: list[dict]) -> int:
        """Apply an agent's status updates (all or none); how many changed a task."""
        with self.store.txn():
            return self._apply_report(node_id, updates)

    async def report_batched(self, node_id: str, updates: list[dict]) -> int:
        """`report`, grouped with the reports of other nodes arriving meanwhile into one store
        transaction: with a thousand agents reporting at once, one commit for the lot."""
        fut = asyncio.get_running_loop().create_future()
        self._reports.append((node_id, updates, fut))
        if len(self._reports) == 1:
            asyncio.get_running_loop().call_soon(self._flush_reports)
        return await fut

    def _flush_reports(self) -> None:
        """One transaction for the reports of many nodes; one node's bad report is refused
        alone (each report is checked whole before any of it is written)."""
        batch, self._reports = self._reports, []
        results: list = []
        try:
            with self.store.txn():
                watched = self._watched_services()
                for node_id, updates, _fut in batch:
                    try:
                        results.append(self._apply_report(node_id, updates, watched))
                    except (ApiError, InvalidObject) as e:
                        results.append(e if isinstance(e, ApiError) else ApiError(str(e)))
        except Exception as e:  # noqa: BLE001 - the commit failed: every caller hears of it
            log.exception("committing status reports failed")
            results = [e] * len(batch)
        for (_n, _u, fut), r in zip(batch, results):
            if fut.done():
                continue
            if isinstance(r, Exception):
                fut.set_exception(r)
            else:
                fut.set_result(r)

    def _apply_report(self, node_id: str, updates: list[dict], watched: Optional[set[str]] = None) -> int:
        """Check every update of one report, then write them (a bad one writes nothing)."""
        st = self.store
        watched = self._watched_services() if watched is None else watched
        writes = []
        for u in updates:
            t = st.get(Task, u.get("task_id", ""))
            if t is None:
                continue
            if t.node_id != node_id:
                raise Forbidden(f"task {t.id} is not assigned to node {node_id}")
            new_state = u.get("state", t.status.state)
            if ts.RANK.get(new_state, -1) < ts.RANK[t.status.state]:
                continue  # states only move forward; a late report is dropped
            if not ts.can_move(ts.AGENT, t.status.state, new_state):
                raise ApiError(f"task {t.id}: agent may not move it from {t.status.state} to {new_state}")
            addresses = self._addresses(t, u.get("addresses")) if u.get("addresses") else None
            # (unchecked: the route's body model checked the agent's fields, the store checks
            # the task it is given; a third validation here was 0.4 % of a deploy)
            status = unchecked(
                TaskStatus,
                state=new_state,
                timestamp=float(u.get("timestamp") or time.time()) if new_state != t.status.state
                else t.status.timestamp,
                message=u.get("message", t.status.message),
                err=u.get("err", t.status.err),
                container_id=u.get("container_id") or t.status.container_id,
                exit_code=u.get("exit_code", t.status.exit_code),
                health=u.get("health", t.status.health),
                addresses=addresses or t.status.addresses,
            )
            if status != t.status:
                quiet = (new_state in QUIET_STATES and status.health == t.status.health
                         and t.service_id not in watched)
                writes.append((t.model_copy(update={"status": status}), quiet))
        st.put_all([t for t, _ in writes], [q for _, q in writes])  # checked whole before any is written
        return len(writes)

    def _subnet(self, net: str) -> Optional[tuple[int, int]]:
        """The network's subnet as (address, mask) integers, worked out once per version of the
        network (None: no such network)."""
        obj = self.store.by_name(NetworkObj, net)
        if obj is None or not obj.subnet:
            return None
        known = self._subnets.get(net)
        if known is None or known[0] != (obj.id, obj.version):
            n = ipaddress.IPv4Network(obj.subnet, strict=False)
            known = self._subnets[net] = ((obj.id, obj.version), (int(n.network_address), int(n.netmask)))
        return known[1]

    def _addresses(self, t: Task, claimed: dict[str, str]) -> dict[str, str]:
        """A task's container addresses, as far as they can be true: only networks the task is
        on, only addresses inside that network's subnet (they become other nodes' DNAT targets
        and DNS answers); anything else is dropped and logged."""
        nets = {a.network for a in t.spec.networks}
        out: dict[str, str] = {}
        for net, ip in claimed.items():
            subnet = self._subnet(net) if net in nets else None
            n = _ipv4(ip) if subnet is not None else None
            if n is not None and n & subnet[1] == subnet[0]:  # type: ignore[index]
                out[net] = ip
            else:
                self._refused_addresses += 1
                if self._refused_addresses <= 10 or self._refused_addresses % 1000 == 0:
                    log.warning("task %s: address %r on network %r refused (not on one of its networks' subnets; "
                                "%d refused so far)", t.id, ip, net, self._refused_addresses)
        return out

    def _watched_services(self) -> set[str]:
        """Services whose tasks' progress the orchestrator must see at once: mid-update (it
        monitors new tasks), jobs (they count completions), and those others depend on."""
        services = self.store.all(Service)
        depended = {d.service for s in services for d in s.spec.depends_on}
        return {s.id for s in services
                if s.update_state is not None or s.spec.mode.endswith("job") or s.spec.name in depended}
