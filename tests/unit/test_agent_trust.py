"""The agent's side of trust (issue #12): it talks only to a manager of its cluster, and keeps
its certificate valid by renewing it, with a new key, before it expires."""
from __future__ import annotations

import time

import pytest
from aiohttp import web

from manager_inproc import _port
from shoal import pki
from shoal.agent.certs import CertKeeper
from shoal.agent.client import ManagerClient, ManagerList, ManagerUnavailable




async def test_a_node_certificate_cannot_pose_as_a_manager(mgr):
    """Any certificate of the cluster's CA is not enough: the agent wants the manager API's name
    (checked in the handshake, before its request — a CSR, a status report — is sent)."""
    node_id, ctx = await mgr.join()
    cert, key = mgr.files[node_id]
    # a rogue server using a worker's certificate (signed by the cluster CA)
    app = web.Application()
    seen = []

    async def anything(request):
        seen.append(await request.read())
        return web.json_response({})
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=pki.server_context(mgr.layout.ca_cert, cert, key)).start()
    try:
        rogue = ManagerClient(ManagerList([f"127.0.0.1:{port}"]), ctx)
        with pytest.raises(ManagerUnavailable, match="not a manager"):
            await rogue.call("POST", "/v1/agent/status", json={"updates": []})
        await rogue.close()
        assert seen == []  # nothing reached it
    finally:
        await runner.cleanup()
    real = ManagerClient(ManagerList([f"127.0.0.1:{mgr.port}"]), ctx)
    assert await real.call("POST", "/v1/agent/heartbeat", json={"description": {"hostname": "w"}})
    await real.close()


async def test_failover_to_the_next_manager(mgr):
    node_id, ctx = await mgr.join()
    dead = f"127.0.0.1:{_port()}"
    managers = ManagerList([dead, f"127.0.0.1:{mgr.port}"])
    client = ManagerClient(managers, ctx)
    with pytest.raises(ManagerUnavailable):
        await client.call("POST", "/v1/agent/heartbeat", json={"description": {}})
    assert managers.current() == f"127.0.0.1:{mgr.port}"
    assert await client.call("POST", "/v1/agent/heartbeat", json={"description": {}})
    await client.close()


async def test_certificates_renew_with_a_new_key_at_the_clusters_lifetime(mgr):
    node_id, ctx = await mgr.join()
    cert, key = mgr.files[node_id]
    first = pki.cert_info(open(cert, "rb").read())
    assert first.not_after - time.time() > 80 * 24 * 3600  # 90 days by default
    status, _ = await mgr.call("POST", "/v1/cluster/update", {"cert_expiry": 120})
    assert status == 200
    client = ManagerClient(ManagerList([f"127.0.0.1:{mgr.port}"]), ctx)
    keeper = CertKeeper(client, mgr.layout.ca_cert, cert, key, None, cert_expiry=lambda: 120.0)
    now = time.time()
    assert keeper.due(now) == now  # what it has left is longer than the cluster's lifetime: at once
    old_key = open(key, "rb").read()
    await keeper.renew()
    new = pki.cert_info(open(cert, "rb").read())
    assert new.serial != first.serial and open(key, "rb").read() != old_key
    assert (new.common_name, new.role, new.org) == (node_id, pki.ROLE_WORKER, mgr.info["cluster_id"])
    assert 100 < new.not_after - time.time() <= 121
    due = keeper.due(time.time())
    assert new.not_before + pki.BACKDATE + 0.5 * 120 - 1 <= due <= new.not_before + pki.BACKDATE + 0.8 * 120 + 1
    # the client now uses the new certificate
    assert await client.call("POST", "/v1/agent/heartbeat", json={"description": {}})
    await client.close()
    # a removed node cannot renew
    await mgr.call("POST", f"/v1/nodes/{node_id}/remove", {"force": True})
    other = ManagerClient(ManagerList([f"127.0.0.1:{mgr.port}"]),
                          pki.client_context(mgr.layout.ca_cert, cert, key))
    with pytest.raises(ManagerUnavailable, match="removed"):
        await CertKeeper(other, mgr.layout.ca_cert, cert, key, None, lambda: 120.0).renew()
    await other.close()
