"""The etcd member Shoal runs for a manager (`shoal init --store etcd`, and every manager that
joins such a cluster), so that several managers need no etcd of the user's own.

Each manager runs one member of Debian's `etcd` as a child of its daemon (it dies with the
daemon, as k3s' embedded etcd does, and is started again if it exits alone). Its manager
talks to it alone, on 127.0.0.1; the members talk to each other on the manager's advertise
address. Both sides are mutual TLS with certificates of the *etcd CA*, a CA of the managers'
own made at `init`: the cluster CA also signs workers' certificates, and a worker must never
open etcd. The etcd CA's key is kept like the cluster CA's (encrypted under the cluster key)
and handed to a joining manager the same way; a member's own key is in clear in its data dir,
as etcd needs it to start before the manager is unlocked.

A manager joins as an etcd *learner* (added by the manager it joins through): a learner
copies the log but does not vote, so a member that never starts cannot take the quorum away.
The leading manager promotes learners once etcd says they have caught up
(`Members.promote_learners`); the new manager's daemon waits for that before it opens the
store. A demoted manager's member leaves etcd's cluster before it stops (removed by the
manager that demotes it, or, demoting itself, by its own daemon), never after.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from typing import Callable, Optional

from shoal import pki
from shoal.paths import Layout
from shoal.store.etcd import EtcdClient, EtcdError, parse_store_url

log = logging.getLogger("shoal.etcd_member")

DEFAULT_CLIENT_PORT = 2379
DEFAULT_PEER_PORT = 2380
MEMBER_ROLE = "etcd-member"  # OU of a member's certificate (it opens etcd only, never the manager API)
START_TIMEOUT = 120.0  # seconds a daemon waits for its member to answer (and, joining, to vote)
PROMOTE_EVERY = 2.0  # seconds between the leader's looks for learners to promote
REMOVED_MARK = b"permanently removed from the cluster"  # what a removed member logs as it exits
CHANGE_PATIENCE = 30.0  # seconds a join or a demotion waits while etcd refuses a change of members


# -- configuration (cluster.json's "etcd") ----------------------------------------------------

def peer_url(addr: str, port: int = DEFAULT_PEER_PORT) -> str:
    return f"https://{addr}:{port}"


def new_member_config(name: str, addr: str, initial_cluster: Optional[str] = None,
                      client_port: int = DEFAULT_CLIENT_PORT, peer_port: int = DEFAULT_PEER_PORT) -> dict:
    """What a member is started with. `initial_cluster` None: the first member of a new etcd
    cluster; else the members as etcd's `--initial-cluster` lists them (joining one)."""
    return {"name": name, "advertise_addr": addr, "client_port": client_port, "peer_port": peer_port,
            "initial_cluster": initial_cluster or f"{name}={peer_url(addr, peer_port)}",
            "state": "existing" if initial_cluster else "new"}


def store_url(layout: Layout, cfg: dict) -> str:
    """Where this manager's store reaches etcd: its own member, over client TLS."""
    q = urllib.parse.urlencode({"ca": layout.etcd_ca_cert, "cert": layout.etcd_cert, "key": layout.etcd_key})
    return f"etcds://127.0.0.1:{cfg.get('client_port', DEFAULT_CLIENT_PORT)}?{q}"


def command(binary: str, layout: Layout, cfg: dict) -> list[str]:
    """The member's command line (the `initial-*` flags only count for an empty data dir)."""
    client = f"https://127.0.0.1:{cfg['client_port']}"
    peer = peer_url(cfg["advertise_addr"], cfg["peer_port"])
    tls = ["--trusted-ca-file", layout.etcd_ca_cert, "--cert-file", layout.etcd_cert, "--key-file", layout.etcd_key,
           "--client-cert-auth",
           "--peer-trusted-ca-file", layout.etcd_ca_cert, "--peer-cert-file", layout.etcd_cert,
           "--peer-key-file", layout.etcd_key, "--peer-client-cert-auth"]
    cmd = [binary, "--name", cfg["name"], "--data-dir", os.path.join(layout.etcd_dir, "data"),
           "--listen-client-urls", client, "--advertise-client-urls", client,
           "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
           "--initial-cluster", cfg["initial_cluster"], "--initial-cluster-state", cfg["state"],
           "--initial-cluster-token", cfg.get("cluster_token", "shoal"),
           # the store resumes its watch from a revision, or reads everything again if compacted
           "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m",
           # a member back from a crash or a partition asks before it calls an election, so it
           # does not depose a healthy etcd leader (the default from etcd 3.5 on)
           "--pre-vote",
           "--logger", "zap", "--log-outputs", "stderr", *tls]
    if cfg.get("force_new_cluster"):
        cmd.append("--force-new-cluster")
    return cmd


# -- certificates -------------------------------------------------------------------------

def create_etcd_ca(layout: Layout, password: bytes) -> None:
    pki.write_pair(pki.make_ca("shoal-etcd", password=password), layout.etcd_ca_cert, layout.etcd_ca_key)


def issue_member_cert(layout: Layout, password: bytes, name: str, addr: str, lifetime: float) -> None:
    """This member's certificate (for its peers and its clients, and the manager's as client)."""
    ca = pki.read_pair(layout.etcd_ca_cert, layout.etcd_ca_key)
    hosts = sorted({addr, "127.0.0.1", "localhost"} - {""})
    pair = pki.issue(ca, name, MEMBER_ROLE, "", lifetime, hosts, ca_password=password)
    os.makedirs(layout.etcd_dir, mode=0o700, exist_ok=True)
    pki.write_pair(pair, layout.etcd_cert, layout.etcd_key)


# -- the process ----------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child: killed when the daemon dies, even by kill -9 (a member without its manager
    would hold the ports the next daemon needs)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EtcdMember:
    """Starts this manager's member, waits until it serves (and votes), keeps it running."""

    def __init__(self, layout: Layout, cfg: dict, save: Callable[[dict], None]):
        self.layout = layout
        self.cfg = cfg
        self.save = save  # persists cfg changes (cluster.json)
        self.proc: Optional[subprocess.Popen] = None
        self._stopping = False
        self._keeper: Optional[asyncio.Task] = None
        self._log_from = 0  # where the running process's lines begin in the log
        self.removed = False  # etcd's cluster removed this member (the manager was demoted): never restarted
        self.client = EtcdClient(parse_store_url(store_url(layout, cfg)))
        self.client.ep.timeout = 2.0

    @property
    def log_path(self) -> str:
        return os.path.join(self.layout.etcd_dir, "etcd.log")

    def _spawn(self) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server; scripts/setup.sh "
                               "installs it)")
        os.makedirs(self.layout.etcd_dir, mode=0o700, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self._log_from = out.tell()
            # Popen from the event loop's thread: the death signal follows the thread that forked
            self.proc = subprocess.Popen(command(binary, self.layout, self.cfg), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, close_fds=True, preexec_fn=_die_with_parent)
        log.info("etcd member %s started (pid %d): peers on %s, log %s", self.cfg["name"], self.proc.pid,
                 peer_url(self.cfg["advertise_addr"], self.cfg["peer_port"]), self.log_path)

    def _was_removed(self) -> bool:
        """Whether the process that exited said etcd's cluster removed it (it then exits 0,
        and would at every start again)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_from)
                return REMOVED_MARK in f.read()
        except OSError:
            return False

    def last_log_line(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 4096))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        return lines[-1][:400] if lines else "nothing in its log"

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        self._spawn()
        deadline = time.monotonic() + timeout
        said = 0.0
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                if self._was_removed():
                    raise RuntimeError("this manager's etcd member was removed from the cluster's etcd (the manager "
                                       "was demoted or removed, or the cluster was formed again with `init "
                                       "--force-new-cluster`): `shoal leave --force` here, then join again")
                raise RuntimeError(f"the etcd member exited with {self.proc.returncode}: {self.last_log_line()} "
                                   f"(see {self.log_path})")
            try:
                st = await asyncio.to_thread(self.client.status)
            except EtcdError:
                st = None
            if st is not None and not st.get("isLearner"):
                break
            if st is not None and time.monotonic() - said > 10:
                said = time.monotonic()
                log.info("etcd member %s is a learner, catching up: waiting for the leading manager to promote it",
                         self.cfg["name"])
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"the etcd member did not {'vote' if st else 'answer'} within {timeout:.0f}s: "
                                   f"{self.last_log_line()} (see {self.log_path})")
            await asyncio.sleep(0.2)
        changed = {k: v for k, v in (("state", "existing"), ("force_new_cluster", False)) if self.cfg.get(k, v) != v}
        if changed:  # from now on the data dir says who the member is
            self.cfg.update(changed)
            self.save(self.cfg)
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        """Started again whenever it exits on its own (backing off up to 30 s)."""
        backoff = 1.0
        while not self._stopping:
            assert self.proc is not None
            code = self.proc.poll()
            if code is None:
                await asyncio.sleep(0.5)
                continue
            if self._was_removed():
                self.removed = True
                log.warning("this manager's etcd member was removed from etcd's cluster (demoted or removed): "
                            "it is not started again")
                return
            log.error("the etcd member exited with %s: %s; starting it again in %.0fs", code, self.last_log_line(),
                      backoff)
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            started = time.monotonic()
            try:
                self._spawn()
            except (OSError, RuntimeError) as e:
                log.error("starting the etcd member again failed: %s", e)
            await asyncio.sleep(5)
            backoff = 1.0 if time.monotonic() - started > 60 else min(30.0, backoff * 2)

    async def stop(self) -> None:
        self._stopping = True
        if self._keeper is not None:
            self._keeper.cancel()
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            await asyncio.to_thread(p.wait, 10)
        except subprocess.TimeoutExpired:
            p.kill()
            await asyncio.to_thread(p.wait)
        self.client.close()


# -- the members, as the managers change them ---------------------------------------------------

class Members:
    """Adds, promotes and removes members, through this manager's own member."""

    def __init__(self, url: str):
        self.url = url
        self._client: Optional[EtcdClient] = None
        self.lock = threading.Lock()  # one connection, used from the loop and from threads

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            self._client = EtcdClient(parse_store_url(self.url))
        return self._client

    def listing(self) -> list[dict]:
        """Every member: name (its manager's node id, "" until a learner starts), peer URL, voting."""
        with self.lock:
            return [{"name": m.get("name", ""), "peer": (m.get("peerURLs") or [""])[0], "voting": not m.get("isLearner")}
                    for m in self.client.members()]

    def add_learner(self, name: str, peer: str) -> dict:
        """A joining manager's member, as a learner; what it starts with."""
        with self.lock:
            return self._add_learner(name, peer)

    def _add_learner(self, name: str, peer: str) -> dict:
        for m in self.client.members():
            if peer in (m.get("peerURLs") or []):
                if m.get("name"):
                    raise ValueError(f"etcd member {m['name']} already uses {peer}: remove that manager "
                                     "(`shoal node demote` / `node rm`) before joining from that address again")
                self.client.member_remove(m["ID"])  # a join that never started its member
                log.info("removed the etcd learner %s that never started (%s)", m["ID"], peer)
        deadline = time.monotonic() + CHANGE_PATIENCE
        while True:
            try:
                member, members = self.client.member_add(peer, learner=True)
                break
            except EtcdError as e:
                # etcd refuses a change of members until every member has been healthy a few
                # seconds (--strict-reconfig-check): right after another manager joined; and
                # right after a removal, until etcd has applied it ("member not found")
                if not any(w in str(e) for w in ("unhealthy cluster", "member not found")) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        initial = ",".join(f"{name if m['ID'] == member['ID'] else m.get('name', '')}={u}"
                           for m in members for u in m.get("peerURLs") or [])
        log.info("etcd member for manager %s added as a learner (%s)", name, peer)
        return {"member_id": member["ID"], "initial_cluster": initial}

    def promote_learners(self) -> list[str]:
        """Promote every learner that has caught up (etcd refuses the others: tried again later)."""
        with self.lock:
            return self._promote_learners()

    def _promote_learners(self) -> list[str]:
        done = []
        for m in self.client.members():
            if not m.get("isLearner") or not m.get("name"):
                continue
            try:
                self.client.member_promote(m["ID"])
            except EtcdError as e:
                log.debug("etcd learner %s not promoted yet: %s", m["name"], e)
                continue
            log.info("etcd member %s promoted to a voting member", m["name"])
            done.append(m["name"])
        return done

    def remove(self, name: str, patience: float = 0.0) -> bool:
        """Remove the member named `name` (False: there is none). With `patience`, wait that
        long while etcd refuses a change of members (right after another one)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                with self.lock:
                    return self._remove(name)
            except EtcdError as e:
                if "unhealthy cluster" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(1.0)

    def _remove(self, name: str) -> bool:
        for m in self.client.members():
            if m.get("name") == name:
                self.client.member_remove(m["ID"])
                log.info("etcd member %s removed", name)
                return True
        return False

    async def keep_promoting(self) -> None:
        """The leader's duty while it leads: learners become voting members once caught up."""
        while True:
            try:
                await asyncio.to_thread(self.promote_learners)
            except EtcdError as e:
                log.debug("looking for etcd learners failed: %s", e)
            await asyncio.sleep(PROMOTE_EVERY)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
