"""`shoal daemon`: the manager and this node's agent, in the foreground (for systemd or `init`).

The two are separate components that share only a process: the agent reaches the
manager over TCP with mutual TLS, exactly as an agent on another machine would.
Stopping the daemon leaves containers running; the next start adopts them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal

from shoal import pki
from shoal.agent.agent import Agent
from shoal.agent.client import ManagerClient
from shoal.bootstrap import read_cluster
from shoal.manager.server import ManagerServer
from shoal.paths import Layout

log = logging.getLogger("shoal.daemon")


async def run_daemon(layout: Layout, listen: str = "0.0.0.0") -> None:
    info = read_cluster(layout)
    if info is None:
        raise SystemExit(f"no cluster in {layout.root}: run `shoal init` first")
    with open(layout.pidfile, "w") as f:
        f.write(str(os.getpid()))
    manager = ManagerServer(layout, info, listen, int(info.get("port", 4343)))
    await manager.start()
    ctx = pki.client_context(layout.ca_cert, layout.node_cert, layout.node_key)
    datapath = None
    if os.environ.get("SHOAL_NO_DATAPATH") != "1":
        from shoal.agent.netplane import NetPlane
        datapath = NetPlane(layout)
    agent = Agent(info["node_id"], ManagerClient(info["manager_url"], ctx),
                  configs_dir=layout.configs_dir, secrets_dir=layout.secrets_dir,
                  addr=info.get("advertise_addr", ""), datapath=datapath)
    agent_task = asyncio.create_task(agent.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("shoal daemon running (node %s)", info["node_id"])
    done, _ = await asyncio.wait({agent_task, asyncio.create_task(stop.wait())},
                                 return_when=asyncio.FIRST_COMPLETED)
    if agent_task in done and agent_task.exception():
        log.error("agent stopped: %r", agent_task.exception())
    await agent.stop()
    await manager.stop()
    try:
        os.unlink(layout.pidfile)
    except FileNotFoundError:
        pass


def main(data_dir: str) -> None:
    logging.basicConfig(level=os.environ.get("SHOAL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_daemon(Layout(data_dir)))
