"""Leadership among managers on etcd (issue #15), against a real etcd member: one leader at a
time, a frozen leader replaced within its lease and its writes refused (fencing) although it
still believes it leads, a leader that resigns gives way at once, and a leader whose lease
is lost behind its back steps down."""
from __future__ import annotations

import asyncio

import pytest

from etcd_server import EtcdServer
from shoal.model.objects import Service
from shoal.model.specs import ContainerSpec, ServiceSpec
from shoal.store import Deposed, open_leadership
from shoal.store import leadership as leadership_mod
from shoal.store.etcd import EtcdStore
from shoal.store.leadership import EtcdLeadership, SoleLeadership
from shoal.store.sqlite import SqliteStore


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    server = EtcdServer(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(leadership_mod, "CAMPAIGN_EVERY", 0.1)
    monkeypatch.setattr(leadership_mod, "RENEW_EVERY", 0.2)


_n = iter(range(10_000))


def svc(image="busybox"):
    return Service(id="svc1", spec=ServiceSpec(name="s_web", container=ContainerSpec(image=image)))


async def _until(pred, timeout=15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_one_manager_alone_leads(tmp_path):
    st = SqliteStore(str(tmp_path / "s.db"))
    lead = open_leadership(st, "m1")
    assert isinstance(lead, SoleLeadership)
    changes = []

    async def go():
        t = asyncio.create_task(lead.run(changes.append))
        await asyncio.sleep(0.05)
        t.cancel()
    asyncio.run(go())
    assert changes == [True] and lead.is_leader and lead.leader_id == "m1"


def test_one_leader_at_a_time_and_a_dead_one_is_replaced_within_its_lease(etcd, fast):
    prefix = f"/lead{next(_n)}/"
    a_store, b_store = EtcdStore(etcd.url, prefix=prefix), EtcdStore(etcd.url, prefix=prefix)
    a, b = EtcdLeadership(a_store, "m-a", ttl=2), EtcdLeadership(b_store, "m-b", ttl=2)
    said: dict[str, list[bool]] = {"a": [], "b": []}

    async def go():
        # the leader will freeze once it leads (a paused or cut-off process: it renews nothing,
        # steps down from nothing, and still believes it leads)
        a._hold = lambda: asyncio.sleep(3600)
        ta = asyncio.create_task(a.run(said["a"].append))
        await _until(lambda: a.is_leader)
        tb = asyncio.create_task(b.run(said["b"].append))
        await _until(lambda: b.leader_id == "m-a")
        assert not b.is_leader and said["b"] == []
        t0 = asyncio.get_running_loop().time()
        await _until(lambda: b.is_leader)
        took = asyncio.get_running_loop().time() - t0
        assert took <= 2 + 1.5, f"the new leader took {took:.1f}s with a 2s lease"
        assert said["b"] == [True]
        # the old leader still believes it leads: its write is refused (fencing)
        assert a.is_leader and said["a"] == [True]
        with pytest.raises(Deposed):
            a_store.put(svc("busybox:from-the-deposed"))
        b_store.put(svc("busybox:from-the-leader"))
        # a leader's big transaction: committed in parts, each with the fence among its compares
        with b_store.txn():
            for i in range(300):
                b_store.put(Service(id=f"big{i}", spec=ServiceSpec(name=f"big_{i}",
                                                                   container=ContainerSpec(image="busybox"))))
        assert EtcdStore(etcd.url, prefix=prefix).count(Service) == 301
        ta.cancel()
        tb.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)

    asyncio.run(go())
    check = EtcdStore(etcd.url, prefix=prefix)
    assert check.get(Service, "svc1").spec.container.image == "busybox:from-the-leader"
    for st in (a_store, b_store, check):
        st.close()


def test_a_leader_that_resigns_gives_way_at_once(etcd, fast):
    prefix = f"/lead{next(_n)}/"
    a_store, b_store = EtcdStore(etcd.url, prefix=prefix), EtcdStore(etcd.url, prefix=prefix)
    a, b = EtcdLeadership(a_store, "m-a", ttl=30), EtcdLeadership(b_store, "m-b", ttl=30)

    async def go():
        ta = asyncio.create_task(a.run(lambda up: None))
        await _until(lambda: a.is_leader)
        tb = asyncio.create_task(b.run(lambda up: None))
        await _until(lambda: b.leader_id == "m-a")
        a.resign()
        ta.cancel()
        t0 = asyncio.get_running_loop().time()
        await _until(lambda: b.is_leader, timeout=5)  # not the 30 s lease
        assert asyncio.get_running_loop().time() - t0 < 3
        tb.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)

    asyncio.run(go())
    a_store.close()
    b_store.close()


def test_a_leader_whose_key_is_taken_steps_down(etcd, fast):
    """Its lease lost behind its back (an etcd member restored, an operator's delete): it
    notices at its next renewal, says so, and campaigns again."""
    prefix = f"/lead{next(_n)}/"
    st = EtcdStore(etcd.url, prefix=prefix)
    a = EtcdLeadership(st, "m-a", ttl=30)
    said: list[bool] = []

    async def go():
        ta = asyncio.create_task(a.run(said.append))
        await _until(lambda: a.is_leader)
        st.client.call("/v3/lease/revoke", {"ID": str(a.lease)})
        await _until(lambda: said[-2:] == [False, True] or said == [True, False])
        ta.cancel()
        await asyncio.gather(ta, return_exceptions=True)

    asyncio.run(go())
    assert said[:2] == [True, False]
    st.close()
