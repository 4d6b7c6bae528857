import asyncio
import socket
import struct

import pytest

from shoal.agent.datapath import dnswire as w
from shoal.agent.datapath.dns import (DnsNetwork, DnsServer, DnsService, DnsView, in_namespace,
                                      resolve)


def _view():
    front = DnsNetwork(name="shop_front", gateway="10.210.1.1", services=[
        DnsService(name="shop_web", stack="shop", vip="10.211.1.2",
                   tasks=["10.210.1.2", "10.210.1.3"]),
        DnsService(name="shop_rr", stack="shop", endpoint_mode="dnsrr",
                   tasks=["10.210.1.4", "10.210.1.5"]),
        DnsService(name="solo", vip="10.211.1.3", tasks=[], aliases=["legacy"]),
    ])
    back = DnsNetwork(name="shop_back", gateway="10.210.2.1", services=[
        DnsService(name="shop_db", stack="shop", vip="10.211.2.2", tasks=["10.210.2.2"]),
        DnsService(name="shop_web", stack="shop", vip="10.211.2.3", tasks=["10.210.2.3"]),
    ])
    return DnsView(networks=[front, back], clients={"10.210.1.9": ["shop_front", "shop_back"]})


@pytest.mark.parametrize("name,ips", [
    ("web", ["10.211.1.2"]),
    ("shop_web", ["10.211.1.2"]),
    ("SHOP_WEB.", ["10.211.1.2"]),
    ("tasks.web", ["10.210.1.2", "10.210.1.3"]),
    ("tasks.shop_web", ["10.210.1.2", "10.210.1.3"]),
    ("rr", ["10.210.1.4", "10.210.1.5"]),
    ("shop_rr", ["10.210.1.4", "10.210.1.5"]),
    ("legacy", ["10.211.1.3"]),
    ("tasks.solo", []),
])
def test_resolve_on_network(name, ips):
    a = resolve(_view(), "10.210.1.1", "10.210.1.7", name)
    assert a.rcode == w.RCODE_NOERROR and a.ips == ips


def test_other_network_invisible_and_namespace_nxdomain():
    v = _view()
    assert resolve(v, "10.210.1.1", "10.210.1.7", "db").rcode == w.RCODE_NXDOMAIN
    assert resolve(v, "10.210.1.1", "10.210.1.7", "tasks.nosuch").rcode == w.RCODE_NXDOMAIN
    # same service name resolves to the VIP of the network the question came from
    assert resolve(v, "10.210.2.1", None, "web").ips == ["10.211.2.3"]


def test_multi_network_client_sees_its_other_networks():
    v = _view()
    assert resolve(v, "10.210.1.1", "10.210.1.9", "db").ips == ["10.211.2.2"]
    assert resolve(v, "10.210.1.1", "10.210.1.9", "web").ips == ["10.211.1.2"]


def test_forwarded_names_and_ptr():
    v = _view()
    assert resolve(v, "10.210.1.1", None, "example.com") is None
    assert not in_namespace("db.example.com")
    assert resolve(v, "10.210.1.1", None, "2.1.211.10.in-addr.arpa").ptr == "shop_web"
    assert resolve(v, "10.210.1.1", None, "9.9.211.10.in-addr.arpa").rcode == w.RCODE_NXDOMAIN
    assert resolve(v, "10.210.1.1", None, "1.0.0.127.in-addr.arpa") is None


def test_wire_roundtrip_and_compression():
    q = w.parse_message(w.build_query("tasks.web", w.TYPE_A, mid=7))
    assert (q.id, q.questions[0].name, q.questions[0].qtype) == (7, "tasks.web", 1)
    resp = w.build_response(q, 0, [w.a_record("tasks.web", "10.0.0.1", 1)])
    assert w.parse_answer_ips(resp) == (0, ["10.0.0.1"])
    # a compressed name: pointer to offset 12
    data = w.build_query("a.b", mid=1)
    assert w.read_name(data + b"\xc0\x0c", len(data))[0] == "a.b"
    with pytest.raises(w.DnsFormatError):
        w.read_name(b"\xc0\x00", 0)  # loop
    with pytest.raises(w.DnsFormatError):
        w.parse_message(b"\x00\x01")


def test_handle_types_and_errors():
    srv = DnsServer(_view(), upstreams=[])

    async def go():
        r = await srv.handle(w.build_query("web", w.TYPE_AAAA), "10.210.1.1", None)
        assert w.parse_answer_ips(r) == (0, [])  # NODATA, not NXDOMAIN
        r = await srv.handle(w.build_query("web"), "10.210.1.1", None)
        assert r[2] & 0x04  # authoritative
        assert w.parse_answer_ips(r) == (0, ["10.211.1.2"])
        # unknown outside the namespace, no upstream: SERVFAIL
        r = await srv.handle(w.build_query("example.com"), "10.210.1.1", None)
        assert w.parse_answer_ips(r)[0] == w.RCODE_SERVFAIL
        r = await srv.handle(b"\x00\x05\x01", "10.210.1.1", None)
        assert r[:2] == b"\x00\x05" and r[3] & 0xF == w.RCODE_FORMERR
    asyncio.run(go())


def test_large_udp_answer_is_truncated():
    many = [f"10.210.1.{i}" for i in range(2, 120)]
    v = DnsView(networks=[DnsNetwork(name="n", gateway="10.210.1.1", services=[
        DnsService(name="big", endpoint_mode="dnsrr", tasks=many)])])
    srv = DnsServer(v, upstreams=[])

    async def go():
        udp = await srv.handle(w.build_query("big"), "10.210.1.1", None)
        tcp = await srv.handle(w.build_query("big"), "10.210.1.1", None, tcp=True)
        assert len(udp) <= 512 and udp[2] & 0x02
        assert sorted(w.parse_answer_ips(tcp)[1]) == sorted(many)
    asyncio.run(go())


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_server_udp_tcp_forwarding_and_update():
    """Loopback end-to-end: the server on 127.0.0.1, a fake upstream on 127.0.0.2."""
    port = _free_port()

    async def go():
        # fake upstream answering every question with 192.0.2.99
        loop = asyncio.get_running_loop()

        class Up(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, d, a):
                q = w.parse_message(d)
                self.t.sendto(w.build_response(q, 0, [w.a_record(q.questions[0].name, "192.0.2.99", 5)]), a)
        # (on a port of its own: port 53 of 127.0.0.2 may be held by another process)
        up_t, _ = await loop.create_datagram_endpoint(Up, local_addr=("127.0.0.2", 0))
        v = DnsView(networks=[DnsNetwork(name="n", gateway="127.0.0.1", services=[
            DnsService(name="web", vip="10.211.1.2")])])
        srv = DnsServer(v, port=port, upstreams=["127.0.0.2"])
        srv.upstream_port = up_t.get_extra_info("sockname")[1]
        await srv.start()
        try:
            async def udp(name):
                fut = loop.create_future()

                class C(asyncio.DatagramProtocol):
                    def datagram_received(self, d, a):
                        fut.set_result(d)
                t, _ = await loop.create_datagram_endpoint(C, remote_addr=("127.0.0.1", port))
                t.sendto(w.build_query(name))
                try:
                    return w.parse_answer_ips(await asyncio.wait_for(fut, 3))
                finally:
                    t.close()

            assert await udp("web") == (0, ["10.211.1.2"])
            assert await udp("www.example.org") == (0, ["192.0.2.99"])
            r, wr = await asyncio.open_connection("127.0.0.1", port)
            q = w.build_query("tasks.web")
            wr.write(struct.pack(">H", len(q)) + q)
            n = struct.unpack(">H", await r.readexactly(2))[0]
            assert w.parse_answer_ips(await r.readexactly(n)) == (0, [])
            wr.close()
            await srv.update(DnsView(networks=[DnsNetwork(name="n", gateway="127.0.0.1", services=[
                DnsService(name="web", vip="10.211.1.7")])]))
            assert await udp("web") == (0, ["10.211.1.7"])
            await srv.update(DnsView())
            assert srv.addresses == []
        finally:
            await srv.stop()
            up_t.close()
    asyncio.run(go())


def test_a_flood_from_one_container_is_bounded_and_others_are_still_answered():
    """3,000 questions from one source toward an upstream that never answers them: the process
    holds a bounded number of sockets and tasks, answers SERVFAIL beyond its bounds, and another
    source still gets both its service names and its forwarded names."""
    import os
    from shoal.agent.datapath import dns as dnsmod
    port = _free_port()

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def go():
        loop = asyncio.get_running_loop()

        class Up(asyncio.DatagramProtocol):  # answers ok.example only; the flood is never answered
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, d, a):
                q = w.parse_message(d)
                if q.questions[0].name == "ok.example":
                    self.t.sendto(w.build_response(q, 0, [w.a_record("ok.example", "192.0.2.99", 5)]), a)
        up_t, _ = await loop.create_datagram_endpoint(Up, local_addr=("127.0.0.3", 53))
        v = DnsView(networks=[DnsNetwork(name="n", gateway="127.0.0.1", services=[
            DnsService(name="web", vip="10.211.1.2")])])
        srv = DnsServer(v, port=port, upstreams=["127.0.0.3"], forward_timeout=2.0)
        await srv.start()
        answers: dict[str, list] = {"a": [], "b": []}

        class C(asyncio.DatagramProtocol):
            def __init__(self, key):
                self.key = key

            def datagram_received(self, d, a):
                answers[self.key].append(w.parse_answer_ips(d))
        try:
            before = fds()
            a_t, _ = await loop.create_datagram_endpoint(lambda: C("a"), local_addr=("127.0.0.5", 0),
                                                         remote_addr=("127.0.0.1", port))
            b_t, _ = await loop.create_datagram_endpoint(lambda: C("b"), local_addr=("127.0.0.6", 0),
                                                         remote_addr=("127.0.0.1", port))
            peak_fds = peak_tasks = 0
            for i in range(3000):
                a_t.sendto(w.build_query(f"flood-{i}.example", mid=i % 65536))
                if i % 50 == 0:  # paced a little, so that a busy machine's kernel keeps most of it
                    await asyncio.sleep(0.004)
                    peak_fds = max(peak_fds, fds())
                    peak_tasks = max(peak_tasks, len(srv._tasks))
            for _ in range(10):  # another container, asking while the flood is on (and retrying, as resolvers do)
                if (0, ["192.0.2.99"]) in answers["b"] and (0, ["10.211.1.2"]) in answers["b"]:
                    break
                b_t.sendto(w.build_query("ok.example", mid=1))
                b_t.sendto(w.build_query("web", mid=2))
                await asyncio.sleep(0.1)
            peak_fds = max(peak_fds, fds())
            assert peak_fds - before <= 6, (before, peak_fds)  # 2 clients, 1 upstream socket
            assert peak_tasks <= dnsmod.MAX_FORWARDS_PER_SOURCE + 2
            # the kernel may drop part of a flood of datagrams; of what arrived, all but the first 32
            # (forwarded, in flight for 2 s) were refused at once, and each refusal was answered
            assert srv.forwarded <= dnsmod.MAX_FORWARDS_PER_SOURCE + 1 and srv.refused >= 1000
            assert (0, ["192.0.2.99"]) in answers["b"] and (0, ["10.211.1.2"]) in answers["b"]
            refused = [a for a in answers["a"] if a[0] == w.RCODE_SERVFAIL]
            assert len(refused) >= srv.refused - 50  # answered at once, not left hanging
            await asyncio.sleep(2.2)  # the forwards in flight time out: everything is released
            assert srv._inflight == 0 and not srv._inflight_by_source
            a_t.close()
            b_t.close()
        finally:
            await srv.stop()
            up_t.close()
    asyncio.run(go())


def test_a_name_that_is_no_dns_name_gets_an_error_not_an_exception():
    """A service name over 63 characters (refused at deploy since, but a view could hold one)
    makes the PTR answer impossible: SERVFAIL, and the server goes on."""
    long = "s" * 70
    v = DnsView(networks=[DnsNetwork(name="n", gateway="10.210.1.1", services=[
        DnsService(name=long, vip="10.211.1.9"), DnsService(name="web", vip="10.211.1.2")])])
    srv = DnsServer(v, upstreams=[])
    resp, q = srv.respond(w.build_query("9.1.211.10.in-addr.arpa", qtype=w.TYPE_PTR), "10.210.1.1", None)
    assert q is None and resp[3] & 0xF == w.RCODE_SERVFAIL
    resp, _ = srv.respond(w.build_query("web"), "10.210.1.1", None)
    assert w.parse_answer_ips(resp) == (0, ["10.211.1.2"])
    for junk in (b"", b"\x00", b"\x12\x34" + b"\xff" * 40, w.build_query("web")[:-3]):
        resp, q = srv.respond(junk, "10.210.1.1", None)
        assert q is None  # answered (FORMERR) or ignored, never raised
