"""A worker's own unix socket: the local CLI's door on a node without a manager.

A worker holds no cluster state, so every cluster command answers with the managers to
ask instead (as Docker's "This node is not a swarm manager"); `info` tells what the node
knows of itself, and `leave` tells the managers the node is going. On a node not in a
cluster yet, `join` makes it join from the running daemon.
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
    def __init__(self, socket_path: str, info: Callable[[], dict], leave: Callable[[], Any],
                 join: Optional[Callable[..., Any]] = None, unlock: Optional[Callable[[str], Any]] = None):
        self.socket_path = socket_path
        self.info = info
        self.leave = leave
        self.join = join
        self.unlock = unlock  # a worker promoted in an autolocked cluster waits for the key
        self.runner: Optional[web.AppRunner] = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        app.add_routes([web.get("/v1/info", self._info), web.post("/v1/local/leave", self._leave),
                        web.post("/v1/local/join", self._join), web.post("/v1/unlock", self._unlock),
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

    async def _join(self, request: web.Request) -> web.Response:
        if self.join is None:
            return self._reply({"message": "this daemon cannot join"}, 409)
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("token"), str) \
                    or not isinstance(body.get("manager"), str):
                raise ValueError("token and manager are required")
        except ValueError as e:
            return self._reply({"message": f"invalid request: {e}"}, 400)
        try:
            port = body.get("port")
            info = await self.join(body["token"], body["manager"], body.get("advertise_addr"),
                                   body.get("availability") or "active",
                                   *([port] if isinstance(port, int) and 0 < port < 65536 else []))
        except Exception as e:  # noqa: BLE001 - the CLI shows why (JoinError, AlreadyInCluster, a timeout…)
            status = 409 if type(e).__name__ == "AlreadyInCluster" else 400
            return self._reply({"message": str(e) or type(e).__name__}, status)
        return self._reply(info)

    async def _unlock(self, request: web.Request) -> web.Response:
        if self.unlock is None:
            return await self._elsewhere(request)
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("key"), str) or not body["key"]:
                raise ValueError("key is required")
        except ValueError as e:
            return self._reply({"message": f"invalid request: {e}"}, 400)
        try:
            return self._reply(await self.unlock(body["key"]))
        except LookupError:
            return await self._elsewhere(request)
        except Exception as e:  # noqa: BLE001 - BadUnlockKey (the manager's keyring is not imported here)
            if type(e).__name__ == "BadUnlockKey":
                return self._reply({"message": "invalid key"}, 403)
            raise

    async def _elsewhere(self, request: web.Request) -> web.Response:
        if self.info().get("role") == "none":
            return self._reply({"message": "This node is not part of a cluster: `shoal init` makes one, "
                                           "`shoal join` joins one."}, 503)
        return self._reply({"message": not_a_manager(self.info().get("managers", []))}, 503)
