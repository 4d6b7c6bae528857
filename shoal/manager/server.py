"""Wires the manager together: store, keyring, CA, membership, heartbeats, dispatcher,
orchestrator and the HTTP API.

It listens on a root-only unix socket in the data dir (the local CLI) at once, and on
TCP with TLS (agents, joining nodes) once the cluster key is available: with autolock,
the manager's private keys are encrypted under it, so a locked manager serves only
`info` and `unlock` on its socket until it is unlocked.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import gc
import logging
import os
import random
import ssl
import time
from typing import Callable, Optional

from aiohttp import web

from shoal import pki
from shoal.manager.actions import ActionHub
from shoal.manager.ca import CertAuthority
from shoal.manager.cluster import Cluster
from shoal.manager.components import Components
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.heartbeats import Heartbeats
from shoal.manager.http.app import ManagerApp
from shoal.manager.keyring import Keyring, Locked
from shoal.manager.dashboard.sessions import Sessions
from shoal.manager.events import EventLog
from shoal.manager.logs import LogHub
from shoal.manager.metrics import ManagerMetrics
from shoal.manager.membership import Membership
from shoal.manager.orchestrator import Orchestrator
from shoal.manager.volumes import VolumeRegistry
from shoal.model.objects import Node
from shoal.paths import Layout
from shoal.manager.etcd_member import Members, issue_member_cert
from shoal.manager.etcd_member import store_url as etcd_store_url
from shoal.manager.lock_sync import LOCK_META, follow, publish
from shoal.store import Deposed, StoreUnavailable, open_leadership, open_store

log = logging.getLogger("shoal.manager")

# asyncio gives every TLS connection a 256 KiB read buffer, zero-filled at once: with a
# thousand nodes (two connections each: heartbeats and the long poll) that alone was 500 MB
# of the manager's memory. Requests to the manager are small; 16 KiB reads are plenty.
asyncio.sslproto.SSLProtocol.max_size = 16 * 1024
LOCK_SYNC_EVERY = 3.0  # seconds between looks at the cluster's lock (several managers)


class ManagerServer:
    def __init__(self, layout: Layout, cluster_info: dict, listen: str, port: int,
                 on_unlocked: Callable[[bytes], None] = lambda password: None,
                 metrics: Optional[ManagerMetrics] = None):
        self.layout = layout
        self.metrics = metrics or ManagerMetrics()  # the daemon's registry, served on --metrics-addr
        self.info = cluster_info
        self.listen = listen
        self.port = port
        self.on_unlocked = on_unlocked  # the daemon starts this node's agent then (its key is sealed too)
        self.runner: Optional[web.AppRunner] = None
        self.tls: Optional[ssl.SSLContext] = None
        self._tasks: list[asyncio.Task] = []
        self._follow: Optional[asyncio.Task] = None
        self._leading: Optional[asyncio.Task] = None  # the orchestrator, while this manager leads
        self._unlocked = False

    async def start(self) -> None:
        L = self.layout
        spec = self.info.get("store", "sqlite")
        self.etcd_members: Optional[Members] = None
        if spec == "etcd":  # the member this manager's daemon runs (etcd_member.py)
            spec = etcd_store_url(L, self.info["etcd"])
            self.etcd_members = Members(spec)
        self.store = open_store(spec, L.store, self.info["cluster_id"])
        self._follow = asyncio.create_task(self.store.follow())  # other managers' writes (etcd)
        self._lock_sync: Optional[asyncio.Task] = None
        self.leadership = open_leadership(self.store, self.info["node_id"])
        events = EventLog(L.events)
        self.store.observe(events.record)
        self.metrics.watch(self.store, lambda: self.leadership.is_leader)
        self.store.on_commit_seconds = self.metrics.store_write.observe
        # The store keeps every object in memory (100,000 tasks are millions of objects): keep
        # what was loaded out of the collector's scans, and collect the youngest generation less
        # often; the manager makes few reference cycles.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        self.keyring = Keyring(L.cluster_key)
        try:
            self.keyring.load()
        except Locked:
            log.warning("the cluster is autolocked: waiting for `shoal unlock`")
        cluster_id, node_id = self.info["cluster_id"], self.info["node_id"]
        self.ca = CertAuthority(L, self.keyring.tls_password, cluster_id)
        cluster = Cluster(self.store, self.keyring, node_id)
        cluster.fill_vnis()
        self.heartbeats = Heartbeats(self.store, on_subnets_changed=cluster.fix_subnet_conflicts,
                                     metrics=self.metrics)
        volumes = VolumeRegistry(self.store)
        self.components = Components(
            store=self.store, keyring=self.keyring, cluster=cluster,
            membership=Membership(self.store, self.ca, self.keyring, cluster_id, self.info.get("store", "sqlite"),
                                  etcd_members=self.etcd_members),
            heartbeats=self.heartbeats,
            dispatcher=Dispatcher(self.store, cluster, self.metrics), log_hub=LogHub(self.store), actions=ActionHub(),
            volumes=volumes, events=events, dashboard=Sessions(), info={k: v for k, v in self.info.items() if k != "unlock_key"},
            on_unlock=self._unlocked_now)
        self.orchestrator = Orchestrator(self.store, volume_nodes=volumes.volume_nodes, metrics=self.metrics,
                                         silent_nodes=self.heartbeats.silent)
        app = ManagerApp(self.components).application()
        # Long polls (agents, logs) would hold shutdown for their whole wait: give them 1 s.
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        if os.path.exists(L.socket):
            os.unlink(L.socket)
        await web.UnixSite(self.runner, L.socket).start()
        os.chmod(L.socket, 0o600)
        if self.info.get("store", "sqlite") != "sqlite":  # several managers: one unlock key for all
            self._lock_sync = asyncio.create_task(self._follow_lock())
        if self.keyring.unlocked:
            await self._start_unlocked()

    async def _follow_lock(self) -> None:
        """The lock as the cluster has it (lock_sync.py): published here first if no manager
        did yet, then followed."""
        while True:
            try:
                if self.store.meta_get(LOCK_META) is None:
                    publish(self.keyring, self.store)
                follow(self.keyring, self.store)
            except StoreUnavailable as e:
                log.debug("following the cluster's lock: %s", e)
            except Exception:  # noqa: BLE001 - tried again; the file stays as it is
                log.exception("following the cluster's lock failed")
            await asyncio.sleep(LOCK_SYNC_EVERY)

    def unlock(self, key: str) -> None:
        """What `shoal unlock` does (BadUnlockKey if `key` does not open the cluster key)."""
        self.keyring.unlock(key)
        self._unlocked_now()

    def _unlocked_now(self) -> None:
        asyncio.get_running_loop().create_task(self._start_unlocked())

    async def _start_unlocked(self) -> None:
        """What needs the cluster key: the manager's TLS keys, the CA, join secrets, the loop."""
        if self._unlocked:
            return
        self._unlocked = True
        c = self.components
        c.membership.ensure(self.info.get("heartbeat_period"), self.info.get("cert_expiry"),
                            self.info.get("data_path_port"))
        self._ensure_own_node()
        password = self.keyring.tls_password()
        L = self.layout
        self.tls = pki.server_context(L.ca_cert, L.manager_cert, L.manager_key, password)
        assert self.runner is not None
        await web.TCPSite(self.runner, self.listen, self.port, ssl_context=self.tls, reuse_address=True).start()
        self.heartbeats.judging = False  # until this manager leads (see _lead)
        self._tasks = [asyncio.create_task(t) for t in (
            c.dispatcher.run(), self.heartbeats.run(), self._renew_server_cert(), self.leadership.run(self._lead))]
        log.info("manager listening on %s:%d and %s", self.listen, self.port, L.socket)
        self.on_unlocked(password)

    def _ensure_own_node(self) -> None:
        """This manager as a node of the store (made at first start; its address kept current)."""
        node_id, addr = self.info["node_id"], self.info.get("advertise_addr", "")
        node = self.store.get(Node, node_id)
        if node is None:
            self.store.put(Node(id=node_id, role="manager", addr=addr, port=self.port,
                                message="waiting for its agent's first heartbeat"))
        elif (node.addr, node.port, node.role) != (addr or node.addr, self.port, "manager"):
            self.store.put(node.model_copy(update={"addr": addr or node.addr, "port": self.port, "role": "manager"}))

    def _lead(self, leading: bool) -> None:
        """This manager starts or stops leading: the orchestrator and the judgement of nodes run
        on the leader alone; every manager serves the API and its agents."""
        if self._leading is not None:
            self._leading.cancel()
            self._leading = None
        self.heartbeats.judging = leading
        if not leading:
            return
        self.heartbeats.lead(time.time())  # nodes get their grace again before any is judged down
        try:
            self._mark_leader()
        except Deposed:
            return  # lost already: the leadership loop says so next
        self._leading = asyncio.create_task(self._leader_duties())

    async def _leader_duties(self) -> None:
        duties = [self.orchestrator.run()]
        if self.etcd_members is not None:  # joining managers' etcd members vote once caught up
            duties.append(self.etcd_members.keep_promoting())
        await asyncio.gather(*duties)

    def _mark_leader(self) -> None:
        """`node ls`: this manager Leader, the others not (as Swarm's MANAGER STATUS)."""
        me = self.info["node_id"]
        with self.store.txn():
            for n in self.store.all(Node):
                if n.role == "manager" and n.leader != (n.id == me):
                    self.store.put(n.model_copy(update={"leader": n.id == me}))

    async def _renew_server_cert(self) -> None:
        """Renew the API's certificate at a random point in 50–80 % of its lifetime (as nodes do)."""
        L = self.layout
        while True:
            try:
                with open(L.manager_cert, "rb") as f:
                    info = pki.cert_info(f.read())
                due = pki.renew_at(info, random.Random(info.serial))  # one point per certificate
                await asyncio.sleep(max(1.0, min(due - time.time(), 3600.0)))
                if time.time() < due:
                    continue
                addr = self.info.get("advertise_addr", "")
                lifetime = self.components.membership.settings().cert_expiry
                self.ca.issue_server_cert(self.info["node_id"], [addr] if addr else [], lifetime)
                if self.info.get("store") == "etcd":  # its etcd member's too (etcd reads it at each handshake)
                    issue_member_cert(L, self.keyring.tls_password(), self.info["node_id"], addr, lifetime)
                assert self.tls is not None
                self.tls.load_cert_chain(L.manager_cert, L.manager_key, password=self.keyring.tls_password())
                log.info("renewed the manager API's certificate")
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retried; the current certificate still serves
                log.exception("renewing the manager API's certificate failed")
                await asyncio.sleep(60)

    async def stop(self) -> None:
        resign = getattr(getattr(self, "leadership", None), "resign", None)
        if resign is not None:
            resign()  # another manager leads at once, not when the lease expires
        tasks = [*self._tasks, *[t for t in (self._follow, self._leading, self._lock_sync) if t is not None]]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.runner:
            await self.runner.cleanup()
        self.store.close()
        self.components.events.close()
