"""`shoal leave --force`: remove everything Shoal made on this node, with the daemon stopped."""
from __future__ import annotations

import asyncio
import json
import subprocess

from shoal.agent.engine import Engine, EngineError
from shoal.paths import Layout


async def _cleanup(node_id: str) -> None:
    async with Engine() as engine:
        labels = {"shoal.managed": "true", "shoal.node.id": node_id}
        for c in await engine.containers.list(labels=labels, all=True):
            try:
                await engine.containers.remove(c["Id"], force=True, v=True)
            except EngineError:
                pass
        for n in await engine.networks.list(labels=labels):
            try:
                await engine.networks.remove(n["Id"])
            except EngineError:
                pass


def _remove_overlay_devices(layout: Layout) -> None:
    try:
        with open(layout.overlay_state) as f:
            devices = json.load(f).get("devices", [])
    except (OSError, ValueError):
        return
    for dev in devices:
        if isinstance(dev, str) and dev.startswith("shv"):
            subprocess.run(["ip", "link", "del", dev], capture_output=True)


def cleanup_node(layout: Layout, node_id: str) -> None:
    asyncio.run(_cleanup(node_id))
    _remove_overlay_devices(layout)
    try:
        from shoal.agent.datapath import teardown
        teardown()
    except ImportError:
        pass
    subprocess.run(["umount", layout.secrets_dir], capture_output=True)
