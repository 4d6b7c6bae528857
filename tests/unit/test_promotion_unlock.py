"""A worker promoted in an autolocked cluster: the manager's keys it is sent are sealed, so it
waits for `shoal unlock` on it; the key is checked against them before the promotion goes on."""
from __future__ import annotations

import asyncio
import base64

import pytest

from shoal.agent.local_api import LocalApi
from shoal.bootstrap import NeedsUnlockKey, _become_manager, check_unlock_key
from shoal.manager.keyring import BadUnlockKey, Keyring
from shoal.paths import Layout


def _answer(tmp_path, autolock: bool) -> tuple[dict, str | None]:
    kr = Keyring(str(tmp_path / "src" / "cluster.key"))
    key = kr.create(autolock)
    blob = open(kr.path, "rb").read()
    return {"manager": {"cluster_key": base64.b64encode(blob).decode(), "ca_key": ""}}, key


def test_the_unlock_key_is_checked_against_the_promotions_sealed_key(tmp_path):
    answer, key = _answer(tmp_path, autolock=True)
    check_unlock_key(answer, key)
    with pytest.raises(BadUnlockKey):
        check_unlock_key(answer, "SWMKEY-1-WRONG")


def test_a_promotion_without_the_key_asks_for_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOAL_UNLOCK_KEY", raising=False)
    answer, _ = _answer(tmp_path, autolock=True)
    with pytest.raises(NeedsUnlockKey, match="autolocked"):
        _become_manager(Layout(str(tmp_path / "node")), answer, "10.0.0.2")


def test_the_workers_socket_takes_the_key_only_while_a_promotion_waits(tmp_path):
    from aiohttp import ClientSession, UnixConnector

    got: list[str] = []
    waiting = {"now": False}

    async def unlock(key: str) -> dict:
        if not waiting["now"]:
            raise LookupError
        if key != "SWMKEY-1-GOOD":
            raise BadUnlockKey("invalid unlock key")
        got.append(key)
        return {"unlocked": True}

    async def go():
        sock = str(tmp_path / "s.sock")
        api = LocalApi(sock, lambda: {"role": "worker", "managers": ["10.0.0.1:4343"]}, lambda: None, unlock=unlock)
        await api.start()
        try:
            async with ClientSession(connector=UnixConnector(path=sock)) as s:
                async def post(key):
                    async with s.post("http://x/v1/unlock", json={"key": key}) as r:
                        return r.status, await r.json()
                status, body = await post("SWMKEY-1-GOOD")
                assert status == 503 and "not a Shoal manager" in body["message"]  # nothing waits
                waiting["now"] = True
                assert (await post("SWMKEY-1-BAD"))[0] == 403
                assert await post("SWMKEY-1-GOOD") == (200, {"unlocked": True})
                assert got == ["SWMKEY-1-GOOD"]
        finally:
            await api.stop()

    asyncio.run(go())
