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
        up_t, _ = await loop.create_datagram_endpoint(Up, local_addr=("127.0.0.2", 53))
        v = DnsView(networks=[DnsNetwork(name="n", gateway="127.0.0.1", services=[
            DnsService(name="web", vip="10.211.1.2")])])
        srv = DnsServer(v, port=port, upstreams=["127.0.0.2"])
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
