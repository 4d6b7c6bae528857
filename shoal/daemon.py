"""`shoal daemon`: this node's components, by role, in the foreground (for systemd or `init`).

- a manager node runs the manager and its own agent: separate components that share only
  a process (the agent reaches the manager over TCP with mutual TLS, exactly as an agent on
  another machine does). With autolock, the agent starts once the manager is unlocked:
  its key is sealed under the cluster key too.
- a worker runs its agent and a local socket for the CLI (`agent/local_api.py`).
- a node not in a cluster yet (`shoal start` before any `init` or `join`) waits on that
  socket, as dockerd waits for `docker swarm join`: a `shoal join` then takes effect in the
  running process (no start-up left to pay once the token is given).

Stopping the daemon leaves containers running; the next start adopts them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Optional

from prometheus_client import CollectorRegistry, Gauge

from shoal import pki
from shoal.agent.agent import Agent
from shoal.agent.certs import CertKeeper
from shoal.agent.engine import Engine
from shoal.agent.client import ManagerClient, ManagerList
from shoal.agent.local_api import LocalApi
from shoal.agent.metrics import AgentMetrics
from shoal.bootstrap import AlreadyInCluster
from shoal.metrics_listener import DEFAULT_METRICS_ADDR, MetricsListener, configured_addr
from shoal.node_files import read_cluster, write_cluster
from shoal.paths import DEFAULT_PORT, Layout

log = logging.getLogger("shoal.daemon")


class Node:
    """The components of this node's daemon."""

    def __init__(self, layout: Layout, info: Optional[dict], listen: str, metrics_addr: str = DEFAULT_METRICS_ADDR):
        self.layout = layout
        self.info = info or {}
        self.listen = listen
        self.role = info.get("role", "manager") if info else "none"
        self.registry = CollectorRegistry(auto_describe=True)  # this node's metrics: manager's and agent's
        self.is_manager = Gauge("swarm_node_manager", "Whether this node is a manager", registry=self.registry)
        self.metrics = MetricsListener(self.registry, metrics_addr)
        self.agent: Optional[Agent] = None
        self.agent_task: Optional[asyncio.Task] = None
        self.manager = None
        self.etcd = None  # this manager's own etcd member (`init --store etcd`)
        self.local_api: Optional[LocalApi] = None
        self._role_watch: Optional[asyncio.Task] = None
        self.changing = False  # between roles: the old parts stopped, the new ones starting
        # Promoted in an autolocked cluster: the promotion's answer, kept until `shoal unlock`
        # on this node gives the key (`_unlock_key`, kept only until the manager is unlocked).
        self._promotion: Optional[dict] = None
        self._unlock_key: Optional[str] = None
        # A node waiting for `shoal join`: its key, made ahead (see _warm_up_for_join)
        self.join_key: Optional[asyncio.Future] = None

    async def start(self) -> None:
        await self.metrics.start()
        await self._start_parts()
        self._role_watch = asyncio.get_running_loop().create_task(self._follow_role())

    async def _start_parts(self) -> None:
        self.is_manager.set(1 if self.role == "manager" else 0)
        if self.role == "manager":
            from shoal.manager.metrics import ManagerMetrics
            from shoal.manager.server import ManagerServer  # only managers carry the manager's code
            if self.info.get("store") == "etcd":
                await self._start_etcd()
            self.manager = ManagerServer(self.layout, self.info, self.listen, int(self.info.get("port", 4343)),
                                         on_unlocked=self.start_agent, metrics=ManagerMetrics(self.registry))
            await self.manager.start()
        else:
            self.local_api = LocalApi(self.layout.socket, self.local_info, self.leave, join=self.join,
                                      unlock=self.unlock)
            await self.local_api.start()
            if self.role == "worker":
                self.start_agent(None)
            elif os.environ.get("SHOAL_NO_DATAPATH") != "1":
                import shoal.agent.netplane  # noqa: F401 - loaded now, not when the join is waited for

    async def _start_etcd(self) -> None:
        """The store's etcd member before the manager that reads it (it dies with this process)."""
        from shoal.manager.etcd_member import EtcdMember

        def save(cfg: dict) -> None:
            info = read_cluster(self.layout) or self.info
            info["etcd"] = cfg
            write_cluster(self.layout, info)
        self.etcd = EtcdMember(self.layout, self.info["etcd"], save)
        await self.etcd.start()

    async def join(self, token: str, manager: str, advertise_addr: Optional[str], availability: str,
                   port: int = DEFAULT_PORT) -> dict:
        """`shoal join` on a node whose daemon already runs (not in a cluster yet). Joined as a
        manager, the node needs a daemon with a manager in it: the CLI starts it again."""
        from shoal.bootstrap import join_cluster
        if self.role != "none":
            raise AlreadyInCluster("This node is already part of a cluster. Use \"shoal leave\" to leave it "
                                   "and join another one.")
        key = None
        if self.join_key is not None:
            try:
                key = await self.join_key
            except Exception:  # noqa: BLE001 - the join makes one
                log.exception("preparing this node's key failed: the join makes one")
            self.join_key = None
        # The engine describes the node while the certificate is obtained: the first heartbeat,
        # which makes the node Ready, need not wait for it (`/info` takes ~10 ms).
        engine = Engine()
        engine_info = asyncio.ensure_future(engine.info())
        try:
            self.info = await asyncio.to_thread(join_cluster, self.layout, token, manager, advertise_addr,
                                                availability, port, key)
        except BaseException:
            await _discard(engine, engine_info)
            raise
        if self.info["role"] == "manager":
            await _discard(engine, engine_info)
            log.info("joined the cluster %s as manager %s: the daemon starts again as a manager",
                     self.info["cluster_id"], self.info["node_id"])
            return {"role": "manager", "node_id": self.info["node_id"], "cluster_id": self.info["cluster_id"]}
        self.role = "worker"
        self.start_agent(None, engine, engine_info)
        assert self.agent is not None
        await asyncio.wait_for(self.agent.heartbeat.registered.wait(), 30)
        log.info("joined the cluster %s as node %s", self.info["cluster_id"], self.info["node_id"])
        return self.local_info()

    def start_agent(self, password: Optional[bytes], engine: Optional[Engine] = None,
                    engine_info: Optional[asyncio.Future] = None) -> None:
        if self.agent is not None:
            return
        L, info = self.layout, self.info
        home = f"127.0.0.1:{info.get('port', 4343)}" if self.role == "manager" else None
        managers = ManagerList(info.get("managers") or [f"127.0.0.1:{info.get('port', 4343)}"],
                               on_change=self._managers_changed, home=home)
        client = ManagerClient(managers, pki.client_context(L.ca_cert, L.node_cert, L.node_key, password))
        record = os.environ.get("SHOAL_AGENT_RECORD")
        if record:  # tests: everything the agent receives, in clear (what a worker learns)
            def append(raw: bytes, path: str = record) -> None:
                with open(path, "ab") as f:
                    f.write(raw + b"\n")
            client.record = append
        datapath = overlay = None
        if os.environ.get("SHOAL_NO_DATAPATH") != "1":
            from shoal.agent.netplane import NetPlane
            from shoal.agent.overlay import Overlay
            datapath = NetPlane(L)
            overlay = Overlay(info.get("advertise_addr", ""), L.overlay_state)
        agent = Agent(info["node_id"], client, configs_dir=L.configs_dir, secrets_dir=L.secrets_dir,
                      addr=info.get("advertise_addr", ""), datapath=datapath, overlay=overlay,
                      metrics=AgentMetrics(self.registry), engine=engine, engine_info=engine_info)
        agent.certs = CertKeeper(client, L.ca_cert, L.node_cert, L.node_key, password,
                                 cert_expiry=lambda: agent.heartbeat.cert_expiry)
        self.agent = agent
        self.agent_task = asyncio.get_running_loop().create_task(agent.run())

    def _managers_changed(self, managers: list[str]) -> None:
        if self.role != "worker":
            return  # a manager's agent talks to its own manager first
        info = read_cluster(self.layout) or self.info
        info["managers"] = managers
        write_cluster(self.layout, info)

    def local_info(self) -> dict:
        a = self.agent
        if self.role == "none":
            return {"role": "none", "hostname": socket.gethostname(), "managers": []}
        return {"role": self.role, "node_id": self.info["node_id"], "cluster_id": self.info.get("cluster_id"),
                "advertise_addr": self.info.get("advertise_addr"), "hostname": socket.gethostname(),
                "managers": a.client.managers.addresses if a else self.info.get("managers", []),
                "registered": bool(a and a.heartbeat.registered.is_set()),
                "seconds_since_manager": round(a.heartbeat.cut_off_for(), 1) if a else None}

    async def leave(self) -> None:
        if self.agent is not None:
            await self.agent.client.call("POST", "/v1/agent/leave", json={}, timeout=10)

    async def stop(self) -> None:
        if self._role_watch is not None:
            self._role_watch.cancel()
        await self._stop_parts()
        await self.metrics.stop()

    async def _stop_parts(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
        if self.manager is not None:
            await self.manager.stop()
        if self.etcd is not None:
            await self.etcd.stop()
        if self.local_api is not None:
            await self.local_api.stop()
        self.agent = self.agent_task = self.manager = self.etcd = self.local_api = None

    # -- promotion and demotion (`node promote|demote`, decided on a manager) ----------------
    async def _follow_role(self) -> None:
        """The role the cluster gives this node comes with its heartbeats' answers: when it is
        not the one this daemon runs, the node becomes what it is told, in this process (its
        containers keep running and are adopted again, as after a restart)."""
        while True:
            await asyncio.sleep(1.0)
            a = self.agent
            want = a.heartbeat.role if a is not None else None
            if self.role == "manager" and self.etcd is not None and self.etcd.removed:
                # demoted by another manager, which removed this one's etcd member first: this
                # manager's own view cannot hear of it any more (its member is gone)
                want = "worker"
            if want == self.role:
                self._promotion = None  # demoted again while it waited for the key
            if not want or self.role not in ("worker", "manager") or want == self.role:
                continue
            if want == "manager" and self._promotion is not None and self._unlock_key is None:
                continue  # waiting for `shoal unlock`
            self.changing = True
            try:
                if want == "manager":
                    await self._promoted()
                else:
                    await self._demoted()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - tried again; the node keeps running as it is
                log.exception("becoming a %s failed, trying again in 10s", want)
                if self.agent is None and self.manager is None and self.local_api is None:
                    try:  # stopped already: as it was, until the next try
                        await self._start_parts()
                    except Exception:  # noqa: BLE001
                        log.exception("starting again as a %s failed", self.role)
                await asyncio.sleep(10)
            finally:
                self.changing = False

    async def _promoted(self) -> None:
        from shoal.bootstrap import NeedsUnlockKey, become_manager
        assert self.agent is not None
        answer = self._promotion
        if answer is None:
            log.info("this node was promoted to a manager: fetching a manager's keys")
            answer = await self.agent.client.call("POST", "/v1/agent/promotion", json={}, timeout=90)
        key, self._unlock_key = self._unlock_key, None
        try:
            info = await asyncio.to_thread(become_manager, self.layout, self.info, answer, key)
        except NeedsUnlockKey:
            self._promotion = answer
            log.warning("this node was promoted to a manager of an autolocked cluster: it stays a worker "
                        "until `shoal unlock` on it gives the unlock key")
            return
        self._promotion = None
        await self._become(info)
        if key and self.manager is not None and not self.manager.keyring.unlocked:
            self.manager.unlock(key)  # the same key opens the manager it now is

    async def unlock(self, key: str) -> dict:
        """`shoal unlock` on a worker: the key a promotion in an autolocked cluster waits for.
        Checked here; the promotion then goes on (LookupError: no promotion waits for it)."""
        from shoal.bootstrap import check_unlock_key
        if self._promotion is None:
            raise LookupError("no promotion waits for an unlock key")
        await asyncio.to_thread(check_unlock_key, self._promotion, key)  # BadUnlockKey
        self._unlock_key = key
        return {"unlocked": True, "promotion": "under way"}

    async def _demoted(self) -> None:
        from shoal.bootstrap import become_worker
        assert self.agent is not None and self.manager is not None
        managers = [m for m in self.agent.client.managers.addresses if not m.startswith("127.")]
        if not managers:
            raise RuntimeError("demoted, but no other manager is known yet")
        log.info("this manager was demoted to a worker: its manager and etcd member stop; it reports to %s",
                 ", ".join(managers))
        password = self.manager.keyring.tls_password()
        expiry = self.agent.heartbeat.cert_expiry
        if self.etcd is not None:
            await self._leave_etcd()
        await self._stop_parts()
        info = await asyncio.to_thread(become_worker, self.layout, self.info, managers, password, expiry)
        await self._become(info, stopped=True)

    async def _leave_etcd(self) -> None:
        """This member out of etcd's cluster before it stops: a voting member that stops while
        still listed counts against the quorum (two members, one stopped: no quorum, and then
        no way to remove it). Through its own member, which answers until etcd has applied it;
        waiting while etcd refuses a change of members right after another."""
        from shoal.manager.etcd_member import CHANGE_PATIENCE, Members
        from shoal.store import StoreUnavailable
        etcd = self.etcd
        assert etcd is not None and self.manager is not None and self.manager.etcd_members is not None
        if etcd.removed:  # the manager that demoted this one removed it already
            return
        members = Members(self.manager.etcd_members.url)
        try:
            if await asyncio.to_thread(members.remove, self.info["node_id"], CHANGE_PATIENCE):
                log.info("this manager's etcd member left etcd's cluster")
        except StoreUnavailable:
            # removed by the manager that demoted this one, its process on its way out?
            for _ in range(50):
                if etcd.removed:
                    return
                await asyncio.sleep(0.2)
            raise
        finally:
            members.close()

    async def _become(self, info: dict, stopped: bool = False) -> None:
        if not stopped:
            await self._stop_parts()
        self.info, self.role = info, info["role"]
        # the parts register their metrics again: a registry of their own
        self.registry = CollectorRegistry(auto_describe=True)
        self.is_manager = Gauge("swarm_node_manager", "Whether this node is a manager", registry=self.registry)
        self.metrics.registry = self.registry
        await self._start_parts()
        log.info("this node is now a %s", self.role)


async def _discard(engine: Engine, asked: asyncio.Future) -> None:
    asked.cancel()
    await asyncio.gather(asked, return_exceptions=True)
    await engine.close()


def _warm_up_for_join() -> pki.ec.EllipticCurvePrivateKey:
    """What a join would do first, done while the daemon waits for one (a joining node is
    Ready sooner): the modules its agent loads, the owners of the ports in use, which the
    first heartbeat reports, and the node's key with its signing request (the first ones a
    process makes load OpenSSL's code: ~5 ms). The key stays in memory until the join."""
    import shoal.agent.netplane  # noqa: F401
    import shoal.agent.overlay  # noqa: F401
    from shoal.agent.datapath.ports import ports_in_use
    ports_in_use()
    key = pki.new_key()
    pki.make_csr(key)
    return key


async def run_daemon(layout: Layout, listen: str = "0.0.0.0", metrics_addr: Optional[str] = None) -> None:
    info = read_cluster(layout)
    os.makedirs(layout.root, exist_ok=True)
    with open(layout.pidfile, "w") as f:
        f.write(str(os.getpid()))
    node = Node(layout, info, listen, metrics_addr if metrics_addr is not None else configured_addr(layout))
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if info is None:
        log.info("shoal daemon running, not in a cluster yet: waiting for `shoal join` (or stop it, then `shoal init`)")
        node.join_key = loop.run_in_executor(None, _warm_up_for_join)
    else:
        log.info("shoal daemon running (node %s, %s)", info["node_id"], node.role)
    stopper = asyncio.create_task(stop.wait())
    while not stop.is_set():
        agent = node.agent_task
        waits = {stopper} | ({agent} if agent else set())
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED, timeout=1)
        if agent is not None and agent in done and agent is node.agent_task and not node.changing:
            exc = agent.exception() if not agent.cancelled() else None
            log.error("agent stopped: %r", exc)
            break
    await node.stop()
    try:
        os.unlink(layout.pidfile)
    except FileNotFoundError:
        pass


def main(data_dir: str, listen: str = "0.0.0.0", metrics_addr: Optional[str] = None) -> None:
    logging.basicConfig(level=os.environ.get("SHOAL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_daemon(Layout(data_dir), listen, metrics_addr))
