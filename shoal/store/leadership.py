"""Which manager leads: the leader alone runs the orchestrator (and its scheduler) and judges
nodes down; every manager serves the API and its agents.

With one manager (SQLite) it always leads. With several on etcd, the leader is the manager
that holds the key ``<prefix>leader``, put with a lease it keeps alive (etcd's own election
recipe): a leader that dies or is cut off loses the key when its lease expires (`LEASE_TTL`
seconds), and another manager, campaigning every `CAMPAIGN_EVERY` seconds, takes it. While
it leads, every commit of the manager's store also checks that the key is still the one it
created (`EtcdStore.fence`): a leader deposed without knowing it yet (paused, partitioned)
can never write. A leader that cannot renew its lease for half its TTL steps down on its own
before the lease expires. Renewals run on a thread of their own, so that a manager whose
event loop is busy for seconds keeps its lease (found by the control-plane benchmark on
etcd: a single manager lost and retook its leadership during a 100,000-task deploy).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import replace
from typing import Callable, Optional

from shoal.store.etcd import EtcdClient, EtcdError, EtcdStore, _b64, _unb64

log = logging.getLogger("shoal.leadership")

LEASE_TTL = 5  # seconds: a dead leader is replaced within about this
CAMPAIGN_EVERY = 1.0  # seconds between a follower's attempts
RENEW_EVERY = LEASE_TTL / 5


class Leadership:
    """Tells `on_change(True/False)` when this manager starts and stops leading."""

    def __init__(self, node_id: str):
        self.node_id = node_id
        self.is_leader = False
        self.leader_id = ""  # the leading manager's node id ("" while unknown)

    async def run(self, on_change: Callable[[bool], None]) -> None:
        raise NotImplementedError


class SoleLeadership(Leadership):
    """One manager: it leads from the start."""

    async def run(self, on_change: Callable[[bool], None]) -> None:
        self.is_leader, self.leader_id = True, self.node_id
        on_change(True)
        await asyncio.Event().wait()


class EtcdLeadership(Leadership):
    def __init__(self, store: EtcdStore, node_id: str, ttl: int = LEASE_TTL):
        super().__init__(node_id)
        self.store = store
        self.ttl = ttl
        self.key = store.prefix + b"leader"
        # its own connection, used from a thread; a short timeout, so that a leader cut off
        # from etcd finds out (and steps down) within half its lease, not etcd's 10 s
        self.client = EtcdClient(replace(store.client.ep, timeout=min(2.0, ttl / 2)))
        self.lease = 0

    async def run(self, on_change: Callable[[bool], None]) -> None:
        try:
            while True:
                try:
                    won = await asyncio.to_thread(self._campaign)
                except EtcdError as e:
                    log.warning("cannot campaign for leadership: %s", e)
                    won = None
                if won is None or not won:
                    await asyncio.sleep(CAMPAIGN_EVERY)
                    continue
                self.is_leader, self.leader_id = True, self.node_id
                log.info("this manager leads the cluster (lease %x)", self.lease)
                on_change(True)
                try:
                    await self._hold()
                finally:
                    self.store.fence = None
                    self.is_leader = False
                    log.warning("this manager no longer leads the cluster")
                    on_change(False)
        finally:
            self.client.close()

    def _campaign(self) -> Optional[bool]:
        """One attempt (in a thread): True when this manager now holds the key."""
        if not self.lease or not self._renew():
            r = self.client.call("/v3/lease/grant", {"TTL": self.ttl})
            self.lease = int(r["ID"])
        key = _b64(self.key)
        r = self.client.call("/v3/kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": _b64(self.node_id), "lease": str(self.lease)}}],
            "failure": [{"request_range": {"key": key}}]})
        if r.get("succeeded"):
            self.store.fence = (self.key, int(r["header"]["revision"]))
            return True
        kvs = ((r.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        self.leader_id = _unb64(kvs[0].get("value", "")).decode() if kvs else ""
        if self.leader_id == self.node_id and kvs:  # ours from before a restart of this process
            self.store.fence = (self.key, int(kvs[0]["create_revision"]))
            if int(kvs[0].get("lease", 0)) == self.lease:
                return True
            self.client.call("/v3/kv/deleterange", {"key": key})  # a lease we no longer keep
            self.store.fence = None
        return False

    def _renew(self) -> bool:
        r = self.client.call("/v3/lease/keepalive", {"ID": str(self.lease)})
        return int((r.get("result") or {}).get("TTL", 0) or 0) > 0

    async def _hold(self) -> None:
        """Keep the lease while the key is ours; return when leadership is lost. The renewals
        run on a thread of their own: a manager whose event loop is busy for seconds (a big
        deploy's commits) still renews its lease, and keeps leading."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future = loop.create_future()
        stop = threading.Event()

        def say_lost() -> None:
            try:
                loop.call_soon_threadsafe(lambda: lost.done() or lost.set_result(None))
            except RuntimeError:  # the loop is gone
                pass

        def renew() -> None:
            last_ok = time.monotonic()
            while not stop.wait(RENEW_EVERY):
                try:
                    still = self._renew() and self._holds_key()
                except EtcdError as e:
                    if time.monotonic() - last_ok > self.ttl / 2:
                        log.warning("cannot renew the leadership's lease for %.1fs (%s): stepping down",
                                    time.monotonic() - last_ok, e)
                        self.lease = 0
                        say_lost()
                        return
                    continue
                if not still:
                    self.lease = 0
                    say_lost()
                    return
                last_ok = time.monotonic()

        thread = threading.Thread(target=renew, name="leadership-lease", daemon=True)
        thread.start()
        try:
            await lost
        finally:
            stop.set()

    def _holds_key(self) -> bool:
        fence = self.store.fence
        r = self.client.call("/v3/kv/range", {"key": _b64(self.key)})
        kvs = r.get("kvs") or []
        return bool(kvs) and fence is not None and int(kvs[0].get("create_revision", 0)) == fence[1]

    def resign(self) -> None:
        """Give the key up at once (a manager stopping cleanly): another leads without waiting
        for the lease to expire."""
        fence = self.store.fence
        if fence is None or not self.lease:
            return
        self.store.fence = None
        client = EtcdClient(self.store.client.ep)  # not the campaign's: it may be in use in a thread
        try:
            client.call("/v3/lease/revoke", {"ID": str(self.lease)})
        except EtcdError as e:
            log.warning("could not give up the leadership at once: %s", e)
        finally:
            client.close()
