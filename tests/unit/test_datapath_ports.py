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
