"""Containers a user starts on an attachable network (`docker run --network`) resolve on
every node: the agent reports them, the manager keeps those in the node's own block, the
endpoint log carries them and every node's DNS answers their names."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from shoal.agent.attached import AttachedContainers
from shoal.agent.datapath.dns import resolve
from shoal.agent.netplane import build_views
from shoal.manager.endpoint_log import EndpointLog
from shoal.manager.heartbeats import Heartbeats
from shoal.model.objects import AttachedFact, NetworkObj, Node, NodeDescription, NodeFacts
from shoal.model.specs import NetworkSpec
from shoal.protocol import facts_digest
from shoal.protocol.endpoint_table import EndpointTable
from shoal.store.sqlite import SqliteStore as Store

NET = NetworkObj(id="net1", spec=NetworkSpec(name="tools", attachable=True), subnet="10.0.9.0/24",
                 gateway="10.0.9.1", attach_ranges={"n1": "10.0.9.240/28", "n2": "10.0.9.224/28"})


@pytest.fixture
def store(tmp_path):
    st = Store(str(tmp_path / "store.db"))
    st.put(NET)
    for n in ("n1", "n2"):
        st.put(Node(id=n, addr="10.77.0.1", state="ready"))
    yield st
    st.close()


def _replay(table: EndpointTable, log: EndpointLog) -> None:
    log.sync()
    table.apply(json.loads(b"".join(log.since(table.epoch, table.seq).parts())))


def _names(table: EndpointTable) -> dict[str, list[str]]:
    return {e["name"]: [b["addresses"]["tools"] for b in e["backends"]] for e in table.entries()}


def test_only_containers_in_the_nodes_own_block_are_kept(store):
    hb = Heartbeats(store)
    mine = AttachedFact(network="tools", name="probe", aliases=["p1"], ip="10.0.9.241")
    theirs = AttachedFact(network="tools", name="thief", ip="10.0.9.225")  # n2's block
    task_addr = AttachedFact(network="tools", name="fake", ip="10.0.9.5")  # a task's range
    hb.beat("n1", NodeDescription(), "", "10.77.0.1", ([], {}, [], [mine, theirs, task_addr]))
    assert store.get(NodeFacts, "n1").attached == [mine]


def test_the_facts_digest_is_unchanged_without_attached_containers():
    """A new agent and an older manager agree while no such container exists."""
    assert facts_digest(["10.9.0.0/16"], {}, [], []) == facts_digest(["10.9.0.0/16"], {}, [])
    a = {"network": "tools", "name": "probe", "aliases": [], "ip": "10.0.9.241"}
    assert facts_digest([], {}, [], [a]) != facts_digest([], {}, [])


def test_attached_containers_come_and_go_in_the_endpoint_log(store):
    hb = Heartbeats(store)
    log = EndpointLog(store)
    agent = EndpointTable()
    probe = AttachedFact(network="tools", name="probe", aliases=["p1"], ip="10.0.9.241")
    hb.beat("n1", NodeDescription(), "", "10.77.0.1", ([], {}, [], [probe]))
    _replay(agent, log)
    assert _names(agent) == {"probe": ["10.0.9.241"]}
    (entry,) = agent.entries()
    assert entry["endpoint_mode"] == "dnsrr" and entry["aliases"] == {"tools": ["p1"]} and not entry["ports"]

    # a second container on another node; a new agent gets the whole table alike
    other = AttachedFact(network="tools", name="other", ip="10.0.9.226")
    hb.beat("n2", NodeDescription(), "", "10.77.0.2", ([], {}, [], [other]))
    _replay(agent, log)
    assert _names(agent) == {"probe": ["10.0.9.241"], "other": ["10.0.9.226"]}
    fresh = EndpointTable()
    _replay(fresh, log)
    assert _names(fresh) == _names(agent)

    # its node goes down: its containers leave every table; back: they come back
    store.put(store.get(Node, "n2").model_copy(update={"state": "down"}))
    _replay(agent, log)
    assert _names(agent) == {"probe": ["10.0.9.241"]}
    store.put(store.get(Node, "n2").model_copy(update={"state": "ready"}))
    _replay(agent, log)
    assert "other" in _names(agent)

    # the container leaves (or gets another address)
    hb.beat("n1", NodeDescription(), "", "10.77.0.1", ([], {}, [], [probe.model_copy(update={"ip": "10.0.9.242"})]))
    _replay(agent, log)
    assert _names(agent)["probe"] == ["10.0.9.242"]
    hb.beat("n1", NodeDescription(), "", "10.77.0.1", ([], {}, [], []))
    _replay(agent, log)
    assert _names(agent) == {"other": ["10.0.9.226"]}
    assert log.table() == agent.entries()


def test_a_restarted_manager_rebuilds_them_from_the_store(store):
    Heartbeats(store).beat("n1", NodeDescription(), "", "10.77.0.1",
                           ([], {}, [], [AttachedFact(network="tools", name="probe", ip="10.0.9.241")]))
    agent = EndpointTable()
    _replay(agent, EndpointLog(store))
    assert _names(agent) == {"probe": ["10.0.9.241"]}


class Keeper:
    def __init__(self) -> None:
        self.objs = {"tools": NET}
        self.ids = {"tools": "engine-net"}

    def bridge_of(self, name: str) -> str:
        return "br-tools"

    def block_of(self, net: NetworkObj) -> str:
        return net.attach_ranges.get("n1", "")


def test_every_nodes_dns_answers_their_names_and_aliases(store):
    Heartbeats(store).beat("n2", NodeDescription(), "", "10.77.0.2",
                           ([], {}, [], [AttachedFact(network="tools", name="other", aliases=["o2", "0123456789ab"],
                                                      ip="10.0.9.226")]))
    agent = EndpointTable()
    _replay(agent, EndpointLog(store))
    dp, dns = build_views(agent.entries(), Keeper())
    assert not dp.vips and not dp.ingress  # a name, nothing to route
    for name in ("other", "OTHER.", "o2", "0123456789ab"):
        assert resolve(dns, "10.0.9.1", "10.0.9.241", name).ips == ["10.0.9.226"], name
    assert resolve(dns, "10.0.9.1", "10.0.9.241", "nobody").ips == []


class FakeNetworks:
    def __init__(self, containers: dict) -> None:
        self.containers = containers

    async def inspect(self, nid: str) -> dict:
        assert nid == "engine-net"
        return {"Containers": self.containers}


class FakeContainers:
    def __init__(self) -> None:
        self.inspected: list[str] = []

    async def inspect(self, cid: str) -> dict:
        self.inspected.append(cid)
        return {"NetworkSettings": {"Networks": {"tools": {"Aliases": ["probe", cid[:12], "p1"]}}}}


class FakeEngine:
    def __init__(self, containers: dict) -> None:
        self.networks = FakeNetworks(containers)
        self.containers = FakeContainers()


def test_the_agent_reports_the_containers_of_its_block_only():
    cid = "a" * 64
    engine = FakeEngine({
        cid: {"Name": "probe", "IPv4Address": "10.0.9.241/24"},
        "b" * 64: {"Name": "app_web.1.xyz", "IPv4Address": "10.0.9.5/24"},  # a task
    })
    watcher = AttachedContainers(engine, Keeper())  # type: ignore[arg-type]
    got = asyncio.run(watcher.list())
    assert got == [{"network": "tools", "name": "probe", "aliases": ["a" * 12, "p1"], "ip": "10.0.9.241"}]
    asyncio.run(watcher.list())
    assert engine.containers.inspected == [cid]  # aliases kept while the container stays
    engine.networks.containers = {}
    assert asyncio.run(watcher.list()) == []
    assert not watcher._aliases
    AttachedFact.model_validate(got[0])  # what the manager accepts


def test_a_container_joining_an_attachable_network_nudges_the_heartbeat():
    """The engine's connect/disconnect events on an attachable network of this node make the
    heartbeat tell the cluster at once (not at its period); other networks' do not."""
    class Events(FakeEngine):
        async def events(self, filters=None):
            assert filters == {"type": ["network"], "event": ["connect", "disconnect"]}
            for name in ("other", "tools", "tools"):
                yield {"Type": "network", "Action": "connect", "Actor": {"Attributes": {"name": name}}}
            await asyncio.sleep(3600)

    nudges: list[int] = []

    async def main() -> None:
        watcher = AttachedContainers(Events({}), Keeper())  # type: ignore[arg-type]
        task = asyncio.create_task(watcher.watch(lambda: nudges.append(1)))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    assert nudges == [1, 1]


def test_a_nudged_heartbeat_beats_before_its_period(monkeypatch):
    from shoal.agent import heartbeat as hb_mod
    beats: list[float] = []

    async def main() -> None:
        hb = hb_mod.Heartbeater.__new__(hb_mod.Heartbeater)
        hb._nudged = asyncio.Event()
        hb.period = 30.0
        hb.quiet = lambda *a: None
        hb.hostname = ""
        hb.client = SimpleNamespace(managers=SimpleNamespace(current=lambda: "10.0.0.1:4343"))

        async def describe():
            return {"hostname": "x"}

        async def facts():
            return {}

        async def beat(desc, facts=None):
            beats.append(asyncio.get_running_loop().time())

        hb.describe, hb.facts, hb.beat = describe, facts, beat
        task = asyncio.create_task(hb.run())
        await asyncio.sleep(0.05)
        hb.nudge()
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(main())
    assert len(beats) == 2 and beats[1] - beats[0] < 1.0
