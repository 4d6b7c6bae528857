import socket

from shoal.agent.datapath.ports import check_port_free


def test_check_port_free_names_the_listener():
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.bind(("::", 0))
    t.listen()
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    uport = u.getsockname()[1]
    try:
        msg = check_port_free("tcp", port)
        assert msg and f"tcp port {port}" in msg and "pid" in msg and "on ::" in msg
        msg = check_port_free("udp", uport)
        assert msg and "on 127.0.0.1" in msg
    finally:
        t.close()
        u.close()
    assert check_port_free("tcp", port) is None


def test_owners_are_kept_between_calls_and_checked_before_use(monkeypatch):
    import os

    from shoal.agent.datapath import ports

    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    t.listen()
    port = t.getsockname()[1]
    try:
        mine = f"(pid {os.getpid()})"
        assert mine in ports.ports_in_use()[f"tcp/{port}"]
        walks = []
        real_walk = ports._walk
        monkeypatch.setattr(ports, "_walk", lambda wanted: walks.append(set(wanted.values())) or real_walk(wanted))
        assert mine in ports.ports_in_use()[f"tcp/{port}"]
        (ino,) = [i for p, _a, i in ports._listening("tcp") if p == port]
        assert all(ino not in w for w in walks)  # its owner was kept, not looked for again
        # a kept owner that no longer holds the socket (the pid now another process) is not believed
        ports._KNOWN[ino] = (1, "init")
        assert mine in ports.ports_in_use()[f"tcp/{port}"]
        assert any(ino in w for w in walks)
    finally:
        t.close()


def test_sock_diag_and_proc_list_the_same_sockets(monkeypatch):
    """The kernel's sock_diag answer (fast: listening sockets only) equals /proc/net's, for
    IPv4, IPv6, v4-mapped and dual-stack sockets; a connected UDP socket is in neither."""
    from shoal.agent.datapath import ports

    socks = []
    for fam, typ, addr in [(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1"), (socket.AF_INET6, socket.SOCK_STREAM, "::1"),
                           (socket.AF_INET6, socket.SOCK_STREAM, "::"), (socket.AF_INET, socket.SOCK_DGRAM, "0.0.0.0"),
                           (socket.AF_INET6, socket.SOCK_DGRAM, "::ffff:127.0.0.1"), (socket.AF_INET6, socket.SOCK_DGRAM, "::")]:
        s = socket.socket(fam, typ)
        if addr == "::":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((addr, 0))
        if typ == socket.SOCK_STREAM:
            s.listen()
        socks.append(s)
    connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connected.connect(("127.0.0.1", 9))
    socks.append(connected)
    try:
        for proto in ("tcp", "udp"):
            diag = sorted(ports._diag(proto))
            assert diag == sorted(ports._proc_listening(proto))
            mine = {(p, a) for p, a, _i in diag}
            for s in socks:
                if (s.type == socket.SOCK_STREAM) == (proto == "tcp") and s is not connected:
                    assert s.getsockname()[1] in {p for p, _a in mine}
        assert connected.getsockname()[1] not in {p for p, _a, _i in ports._listening("udp")}

        def refused(proto):
            raise OSError(93, "no sock_diag")
        monkeypatch.setattr(ports, "_diag", refused)  # where the kernel has no sock_diag: /proc
        port = socks[0].getsockname()[1]
        assert check_port_free("tcp", port) and "on 127.0.0.1" in check_port_free("tcp", port)
    finally:
        for s in socks:
            s.close()
