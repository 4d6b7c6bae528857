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
