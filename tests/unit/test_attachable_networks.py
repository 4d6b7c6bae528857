"""Attachable networks (issue #14): every ready node holds them, each with a block of
addresses of its own for the containers users start there with `docker run --network`; the
block is outside every task's and node's address, and other nodes are told its addresses as
peers so that those containers are reachable across nodes."""
from __future__ import annotations

import ipaddress

import pytest

from shoal.core.network_holders import network_holders
from shoal.manager.addresses import AddressBook
from shoal.manager.allocator import AllocationError, allocate_block, attach_block_size, block_addresses
from shoal.manager.peers import PeerLog
from shoal.model.objects import NetworkObj, Node, Service, Task, TaskStatus
from shoal.store.sqlite import SqliteStore

NET = "att"


@pytest.fixture
def st(tmp_path):
    s = SqliteStore(str(tmp_path / "s.db"))
    s.put(NetworkObj(id="n1", spec={"name": NET, "driver": "overlay", "attachable": True},
                     subnet="10.0.9.0/24", gateway="10.0.9.1", vni=4097))
    for nid, addr in (("a", "192.168.50.2"), ("b", "192.168.50.3"), ("c", "192.168.50.4")):
        s.put(Node(id=nid, state="ready", addr=addr))
    s.put(Service(id="s1", spec={"name": "web", "container": {"image": "busybox"},
                                 "networks": [{"network": NET}]}))
    yield s
    s.close()


def test_blocks_are_aligned_from_the_top_and_avoid_what_is_taken():
    free = lambda ip: False  # noqa: E731
    assert allocate_block("10.0.9.0/24", "10.0.9.1", free, 16) == "10.0.9.224/28"  # .240/28 holds the broadcast
    taken = {"10.0.9.230"}
    assert allocate_block("10.0.9.0/24", "10.0.9.1", taken.__contains__, 16) == "10.0.9.208/28"
    assert allocate_block("10.0.9.0/27", "10.0.9.1", free, 4) == "10.0.9.24/30"
    assert attach_block_size("10.0.0.0/16") == 16 and attach_block_size("10.0.9.0/26") == 4
    assert attach_block_size("10.0.9.0/29") == 0
    with pytest.raises(AllocationError, match="too small"):
        allocate_block("10.0.9.0/29", "10.0.9.1", free, 0)
    everything = lambda ip: ip != "10.0.9.3"  # noqa: E731
    with pytest.raises(AllocationError, match="no free block of 4 addresses left in 10.0.9.0/27"):
        allocate_block("10.0.9.0/27", "10.0.9.1", everything, 4)


def test_every_node_holds_an_attachable_network_even_while_down(st):
    """A node that is down keeps its block: its users' containers may still hold addresses of
    it, and another node given the block would give them out again."""
    st.put(st.get(Node, "c").model_copy(update={"state": "down"}))
    held = network_holders(st.all(Service), {}, st.all(Node), st.all(NetworkObj))
    assert held == {NET: {"a", "b", "c"}}
    plain = st.get(NetworkObj, "n1")
    plain = plain.model_copy(update={"spec": plain.spec.model_copy(update={"attachable": False})})
    assert network_holders(st.all(Service), {}, st.all(Node), [plain]) == {}


def test_each_holder_gets_an_address_and_a_block_no_task_shares(st):
    book = AddressBook(st)
    book.settle_nodes({NET: {"a", "b"}})
    net = st.get(NetworkObj, "n1")
    assert set(net.node_addresses) == set(net.attach_ranges) == {"a", "b"}
    blocks = [ipaddress.ip_network(b) for b in net.attach_ranges.values()]
    assert not blocks[0].overlaps(blocks[1]) and all(b.num_addresses == 16 for b in blocks)
    inside = {ip for b in net.attach_ranges.values() for ip in block_addresses(b)}
    assert not inside & (set(net.node_addresses.values()) | {net.gateway})
    # tasks placed afterwards (many of them) never take an address of a block
    for i in range(60):
        t = st.put(Task(id=f"t{i}", service_id="s1", service_name="web", slot=i + 1,
                        spec=st.get(Service, "s1").spec, status=TaskStatus(state="pending")))
        got = book.for_task(t, "a")[NET]
        st.put(t.model_copy(update={"node_id": "a", "addresses": {NET: got},
                                    "status": TaskStatus(state="assigned")}))
        assert got not in inside
    # a new book (another manager, or a restart) reads the blocks back as taken
    fresh = AddressBook(st)
    t = st.put(Task(id="t99", service_id="s1", service_name="web", slot=99, spec=st.get(Service, "s1").spec,
                    status=TaskStatus(state="pending")))
    assert fresh.for_task(t, "b")[NET] not in inside


def test_a_node_that_stops_holding_gives_its_block_back(st):
    book = AddressBook(st)
    book.settle_nodes({NET: {"a", "b"}})
    gone = st.get(NetworkObj, "n1").attach_ranges["b"]
    book.settle_nodes({NET: {"a"}})
    assert set(st.get(NetworkObj, "n1").attach_ranges) == {"a"}
    book.settle_nodes({NET: {"a", "c"}})
    assert st.get(NetworkObj, "n1").attach_ranges["c"] == gone  # free again, the highest block left


def test_a_network_that_is_not_attachable_has_no_blocks(st):
    net = st.get(NetworkObj, "n1")
    st.put(net.model_copy(update={"spec": net.spec.model_copy(update={"attachable": False})}))
    AddressBook(st).settle_nodes({NET: {"a"}})
    net = st.get(NetworkObj, "n1")
    assert net.attach_ranges == {} and set(net.node_addresses) == {"a"}


def test_other_nodes_are_told_every_address_of_a_block(st):
    book = AddressBook(st)
    book.settle_nodes({NET: {"a", "b"}})
    log = PeerLog(st)
    net = st.get(NetworkObj, "n1")
    want_b = sorted([ip, "192.168.50.3"] for ip in block_addresses(net.attach_ranges["b"]) + [net.node_addresses["b"]])
    assert [p for p in log.peers(NET, "a") if p[1] == "192.168.50.3"] == want_b
    # b leaves the network: its block's entries go from a's peers
    book.settle_nodes({NET: {"a"}})
    log.sync()
    assert log.peers(NET, "a") == []


class _Networks:
    """The part of the engine's network API the agent's keeper uses, in memory."""

    def __init__(self):
        self.nets: dict[str, dict] = {}

    async def inspect(self, ref):
        from shoal.agent.engine import NotFound
        if ref not in self.nets:
            raise NotFound(404, "no such network")
        return self.nets[ref]

    async def remove(self, ref):
        from shoal.agent.engine import EngineError
        if self.nets[ref].get("Containers"):
            raise EngineError(403, "error while removing network: network has active endpoints")
        del self.nets[ref]

    async def list(self, labels=None):
        return []

    async def create(self, name, driver, opts, *, subnets, gateway, ip_range, internal, labels):
        config = {"Subnet": subnets[0], "Gateway": gateway, **({"IPRange": ip_range} if ip_range else {})}
        self.nets[name] = {"Id": name, "Name": name, "Labels": labels, "IPAM": {"Config": [config]}}
        return name


def test_the_agent_gives_the_engine_its_nodes_block_of_an_attachable_network_and_nothing_else():
    import asyncio

    from shoal.agent.networks import NetworkKeeper

    class Engine:
        networks = _Networks()

    async def go():
        engine = Engine()
        keeper = NetworkKeeper(engine, "a")
        net = NetworkObj(id="n1", spec={"name": NET, "driver": "overlay", "attachable": True},
                         subnet="10.0.9.0/24", gateway="10.0.9.1", vni=4097, node_addresses={"a": "10.0.9.2"})
        await keeper.ensure([net])  # no block yet: closed to the engine's IPAM (the gateway alone)
        assert engine.networks.nets[NET]["IPAM"]["Config"][0]["IPRange"] == "10.0.9.1/32"
        net = net.model_copy(update={"attach_ranges": {"a": "10.0.9.224/28", "b": "10.0.9.208/28"}})
        engine.networks.nets[NET]["Containers"] = {"c1": {}}
        await keeper.ensure([net])  # in use: kept as it is, tasks still get it
        assert engine.networks.nets[NET]["IPAM"]["Config"][0]["IPRange"] == "10.0.9.1/32"
        assert keeper.ids[NET] == NET and NET not in keeper.errors
        del engine.networks.nets[NET]["Containers"]
        await keeper.ensure([net])  # not tried again with every assignment...
        assert engine.networks.nets[NET]["IPAM"]["Config"][0]["IPRange"] == "10.0.9.1/32"
        keeper.needed = {NET}
        await keeper.prune()  # ...but after the periodic pass, once unused: made again with the block
        await keeper.ensure([net])
        assert engine.networks.nets[NET]["IPAM"]["Config"][0]["IPRange"] == "10.0.9.224/28"
        await keeper.ensure([net])  # and left alone after that
        plain = net.model_copy(update={"spec": net.spec.model_copy(update={"name": "plain", "attachable": False})})
        await keeper.ensure([plain])  # not attachable: the engine gives out nothing itself
        assert engine.networks.nets["plain"]["IPAM"]["Config"][0]["IPRange"] == "10.0.9.1/32"

    asyncio.run(go())


def test_docker_run_containers_dns_questions_go_to_the_service_dns():
    from shoal.agent.datapath.render import render_ruleset
    from shoal.agent.datapath.view import AttachedDns, DatapathView

    rules = render_ruleset(DatapathView(attached_dns=[
        AttachedDns(bridge="br-123456789abc", block="10.0.9.224/28", gateway="10.0.9.1")]))
    nat = rules.split("chain prerouting {", 1)[1].split("chain output {", 1)[0]
    assert ('iifname "br-123456789abc" ip saddr 10.0.9.224/28 ip daddr != 10.0.9.1 meta l4proto { tcp, udp } '
            'th dport 53 dnat ip to 10.0.9.1') in nat


def _blocks_for(tmp_path, subnet: str, nodes: int):
    s = SqliteStore(str(tmp_path / f"{nodes}.db"))
    s.put(NetworkObj(id="n1", spec={"name": NET, "driver": "overlay", "attachable": True},
                     subnet=subnet, gateway=subnet.rsplit(".", 1)[0] + ".1", vni=4097))
    ids = [f"n{i:02d}" for i in range(nodes)]
    for nid in ids:
        s.put(Node(id=nid, state="ready", addr="192.168.50.2"))
    AddressBook(s).settle_nodes({NET: set(ids)})
    net = s.get(NetworkObj, "n1")
    s.close()
    return net


def test_blocks_take_half_of_the_subnet_at_most_and_every_node_still_holds_it(tmp_path):
    """Blocks take at most half of the subnet: 4 × 16, 4 × 8, 8 × 4 in a /24; the nodes after
    those hold the network without a block (their engines refuse `docker run` there)."""
    net = _blocks_for(tmp_path, "10.0.9.0/24", 20)
    sizes = sorted(ipaddress.ip_network(b).num_addresses for b in net.attach_ranges.values())
    assert len(net.node_addresses) == 20 and sizes == [4] * 8 + [8] * 4 + [16] * 4
    every = [ip for b in net.attach_ranges.values() for ip in block_addresses(b)]
    assert len(every) == len(set(every)) and not set(every) & set(net.node_addresses.values())
    free = 254 - len(every) - len(net.node_addresses) - 1  # left for tasks (the gateway aside)
    assert free >= 100


def test_a_nodes_answer_names_its_own_block_and_no_block_key_for_other_networks():
    """An agent older than the blocks refuses the `attach_ranges` key: it is sent only where the
    node has a block, so such an agent keeps working on every network that is not attachable."""
    from shoal.manager.dispatcher import Dispatcher
    att = NetworkObj(id="n1", spec={"name": NET, "attachable": True}, subnet="10.0.9.0/24",
                     node_addresses={"a": "10.0.9.2", "b": "10.0.9.3"},
                     attach_ranges={"a": "10.0.9.224/28", "b": "10.0.9.208/28"})
    plain = NetworkObj(id="n2", spec={"name": "app_default"}, subnet="10.0.8.0/24", node_addresses={"a": "10.0.8.2"})
    assert Dispatcher._network_for(att, "a")["attach_ranges"] == {"a": "10.0.9.224/28"}
    assert Dispatcher._network_for(att, "a")["node_addresses"] == {"a": "10.0.9.2"}
    assert "attach_ranges" not in Dispatcher._network_for(plain, "a")
    assert NetworkObj.model_validate(Dispatcher._network_for(plain, "a")).attach_ranges == {}
