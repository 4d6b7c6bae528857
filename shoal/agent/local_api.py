"""A worker's own unix socket: the local CLI's door on a node without a manager.

A worker holds no cluster state, so every cluster command answers with the managers to
ask instead (as Docker's "This node is not a swarm manager"); `info` tells what the node
knows of itself, and `leave` tells the managers the node is going.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Optional

from aiohttp import web

from shoal.agent.client import ManagerUnavailable

log = logging.getLogger("shoal.agent.local")


def not_a_manager(managers: list[str]) -> str:
    where = ", ".join(managers) or "the managers this node joined"
    return ("This node is not a Shoal manager. Worker nodes can't be used to view or modify cluster state. "
            f"Please run this command on a manager node ({where}).")


class LocalApi:
    def __init__(self, socket_path: str, info: Callable[[], dict], leave: Callable[[], Any]):
        self.socket_path = socket_path
        self.info = info
        self.leave = leave
        self.runner: Optional[web.AppRunner] = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        app.add_routes([web.get("/v1/info", self._info), web.post("/v1/local/leave", self._leave),
                        web.route("*", "/{tail:.*}", self._elsewhere)])
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        await web.UnixSite(self.runner, self.socket_path).start()
        os.chmod(self.socket_path, 0o600)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @staticmethod
    def _reply(data: Any, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(data), status=status, content_type="application/json")

    async def _info(self, request: web.Request) -> web.Response:
        return self._reply(self.info())

    async def _leave(self, request: web.Request) -> web.Response:
        try:
            await self.leave()
        except ManagerUnavailable as e:
            return self._reply({"message": f"the managers could not be told: {e}"}, 503)
        return self._reply({"left": True})

    async def _elsewhere(self, request: web.Request) -> web.Response:
        return self._reply({"message": not_a_manager(self.info().get("managers", []))}, 503)
