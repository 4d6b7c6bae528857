"""container_body / container_status / files paths: pure, no Docker."""
from __future__ import annotations

import json

import pytest

from shoal.agent import files
from shoal.agent.engine import (JSONStreamDecoder, LineSplitter, StreamDemux, encode_filters,
                                negotiate_version, split_image_ref)
from shoal.agent.executor import (UNHEALTHY_ERR, container_body, container_name, container_status,
                                  parse_time)
from shoal.model.objects import Task
from shoal.model.specs import (ContainerSpec, FileRef, HealthCheck, Mount, NetworkAttachment, PortConfig,
                               ResourceRequirements, Resources, ServiceSpec, Ulimit)

SEC = "/run/shoal/secrets"
CFG = "/var/lib/shoal/agent/configs"


def make_task(container: ContainerSpec | None = None, **spec_kw) -> Task:
    spec = ServiceSpec(name=spec_kw.pop("name", "todo_todo-web"), stack=spec_kw.pop("stack", "todo"),
                       container=container or ContainerSpec(image="shoal/busybox:latest"), **spec_kw)
    return Task(id="abc123", service_id="svc1", service_name=spec.name, slot=1, spec=spec, spec_version=7)


def test_minimal_body():
    t = make_task()
    b = container_body(t, "node1", SEC, CFG, [])
    assert b["Image"] == "shoal/busybox:latest"
    for k in ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Hostname", "Healthcheck", "StopSignal",
              "NetworkingConfig"):
        assert k not in b
    assert b["StopTimeout"] == 10
    h = b["HostConfig"]
    assert h["RestartPolicy"] == {"Name": "no"}
    for k in ("NanoCpus", "Memory", "PidsLimit", "Init", "Mounts", "Tmpfs", "CapAdd"):
        assert k not in h
    assert b["Labels"] == {
        "com.docker.stack.namespace": "todo", "shoal.managed": "true", "shoal.task.id": "abc123",
        "shoal.task.name": "todo_todo-web.1", "shoal.service.id": "svc1",
        "shoal.service.name": "todo_todo-web", "shoal.node.id": "node1", "shoal.spec.version": "7"}
    json.dumps(b)  # serialisable


def test_container_name():
    assert container_name(make_task()) == "todo_todo-web.1.abc123"
    t = make_task()
    g = t.model_copy(update={"slot": 0, "node_id": "n9"})
    assert container_name(g) == "todo_todo-web.n9.abc123"


def test_no_stack_label_without_stack():
    t = make_task(stack=None, name="plain")
    b = container_body(t, "n", SEC, CFG, [])
    assert "com.docker.stack.namespace" not in b["Labels"]


def test_full_body():
    c = ContainerSpec(
        image="img:1", command=["sh", "-c", "x"], entrypoint=["/init"], env={"A": "1", "B": None, "C": ""},
        working_dir="/w", user="1000:1000", hostname="h1", labels={"x": "y", "shoal.task.id": "spoof"},
        stop_grace_period=2.5, stop_signal="SIGINT", init=True, read_only=True,
        tmpfs=["/tmp", "/run:size=64k,mode=1777"], cap_add=["NET_ADMIN"], cap_drop=["ALL"],
        sysctls={"net.core.somaxconn": "1024"}, ulimits={"nofile": Ulimit(soft=1024, hard=2048)},
        extra_hosts=["db:10.0.0.5"], dns=["1.1.1.1"], dns_search=["example.org"], dns_opt=["ndots:2"],
        tty=True,
        healthcheck=HealthCheck(test=["CMD-SHELL", "true"], interval=1.5, timeout=0.25, retries=3,
                                start_period=10),
        mounts=[
            Mount(type="volume", source="todo_data", target="/data", volume_nocopy=True,
                  volume_driver="local", volume_driver_opts={"type": "tmpfs"}, volume_labels={"l": "v"}),
            Mount(type="volume", target="/anon"),
            Mount(type="bind", source="/host", target="/h", read_only=True, bind_propagation="rprivate"),
            Mount(type="tmpfs", target="/t", tmpfs_size=1048576, tmpfs_mode=0o1777),
        ],
        configs=[FileRef(source="todo_cfg", target="/etc/app.json", mode=0o440)],
        secrets=[FileRef(source="todo_pw", target="/run/secrets/pw"), FileRef(source="todo_k", target="key")],
    )
    t = make_task(c, resources=ResourceRequirements(
        limits=Resources(nano_cpus=500_000_000, memory_bytes=104857600, pids=50),
        reservations=Resources(memory_bytes=1 << 20)))
    b = container_body(t, "node1", SEC, CFG, [])
    assert b["Cmd"] == ["sh", "-c", "x"] and b["Entrypoint"] == ["/init"]
    assert b["Env"] == ["A=1", "C="]
    assert (b["WorkingDir"], b["User"], b["Hostname"]) == ("/w", "1000:1000", "h1")
    assert b["Labels"]["x"] == "y" and b["Labels"]["shoal.task.id"] == "abc123"
    assert b["StopTimeout"] == 3 and b["StopSignal"] == "SIGINT"
    assert b["Tty"] is True
    assert b["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 1_500_000_000,
                                "Timeout": 250_000_000, "StartPeriod": 10_000_000_000, "Retries": 3}
    h = b["HostConfig"]
    assert h["NanoCpus"] == 500_000_000 and h["Memory"] == 104857600 and h["PidsLimit"] == 50
    assert h["MemoryReservation"] == 1 << 20
    assert h["Init"] is True and h["ReadonlyRootfs"] is True
    assert h["Tmpfs"] == {"/tmp": "", "/run": "size=64k,mode=1777"}
    assert h["CapAdd"] == ["NET_ADMIN"] and h["CapDrop"] == ["ALL"]
    assert h["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert h["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert h["ExtraHosts"] == ["db:10.0.0.5"]
    assert (h["Dns"], h["DnsSearch"], h["DnsOptions"]) == (["1.1.1.1"], ["example.org"], ["ndots:2"])
    m = h["Mounts"]
    assert m[0] == {"Type": "volume", "Source": "todo_data", "Target": "/data",
                    "VolumeOptions": {"NoCopy": True,
                                      "Labels": {"l": "v", "com.docker.stack.namespace": "todo"},
                                      "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}}
    assert m[1] == {"Type": "volume", "Target": "/anon"}
    assert m[2] == {"Type": "bind", "Source": "/host", "Target": "/h", "ReadOnly": True,
                    "BindOptions": {"Propagation": "rprivate"}}
    assert m[3] == {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 0o1777}}
    cfg, pw, key = m[4], m[5], m[6]
    assert cfg["Type"] == "bind" and cfg["ReadOnly"] is True and cfg["Target"] == "/etc/app.json"
    assert cfg["Source"] == files.config_path(CFG, "abc123", c.configs[0])
    assert cfg["Source"].startswith(CFG + "/abc123/")
    assert pw["Source"].startswith(SEC + "/abc123/") and pw["Target"] == "/run/secrets/pw" and pw["ReadOnly"]
    assert key["Target"] == "/run/secrets/key"
    assert h["RestartPolicy"] == {"Name": "no"}


def test_healthcheck_disable():
    for hc in (HealthCheck(disable=True), HealthCheck(test=["NONE"])):
        b = container_body(make_task(ContainerSpec(image="i", healthcheck=hc)), "n", SEC, CFG, [])
        assert b["Healthcheck"] == {"Test": ["NONE"]}


def test_healthcheck_inherit_test():
    b = container_body(make_task(ContainerSpec(image="i", healthcheck=HealthCheck(interval=2))), "n", SEC, CFG, [])
    assert b["Healthcheck"] == {"Interval": 2_000_000_000}


def test_networks_first_only_and_no_aliases():
    t = make_task(networks=[NetworkAttachment(network="todo_front", aliases=["web", "www"]),
                            NetworkAttachment(network="todo_back", ipv4_address="10.9.0.9")])
    b = container_body(t, "n", SEC, CFG, ["todo_front", "todo_back"])
    eps = b["NetworkingConfig"]["EndpointsConfig"]
    assert list(eps) == ["todo_front"]
    # service names are the node DNS server's job (VIPs); the engine must not answer them
    assert "Aliases" not in eps["todo_front"]
    assert b["HostConfig"]["NetworkMode"] == "todo_front"
    from shoal.agent.executor import endpoint_config
    assert endpoint_config(t, "todo_back") == {"IPAMConfig": {"IPv4Address": "10.9.0.9"},
                                               "MacAddress": "02:42:0a:09:00:09"}
    assert endpoint_config(t, "other") == {}


def test_the_managers_address_and_the_mac_it_implies():
    """The overlay's forwarding entries on other nodes derive the MAC from the address."""
    t = make_task(networks=[NetworkAttachment(network="todo_front")])
    t = t.model_copy(update={"addresses": {"todo_front": "10.210.7.23"}})
    b = container_body(t, "n", SEC, CFG, ["todo_front"])
    ep = b["NetworkingConfig"]["EndpointsConfig"]["todo_front"]
    assert ep == {"IPAMConfig": {"IPv4Address": "10.210.7.23"}, "MacAddress": "02:42:0a:d2:07:17"}
    assert b["MacAddress"] == "02:42:0a:d2:07:17"


def test_host_ports():
    t = make_task(ports=[PortConfig(target=80, published=8080, mode="host"), PortConfig(target=81)])
    b = container_body(t, "n", SEC, CFG, [])
    assert b["ExposedPorts"] == {"80/tcp": {}}
    assert b["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}


def test_same_source_two_targets_distinct_files():
    c = ContainerSpec(image="i", configs=[FileRef(source="c", target="/a"), FileRef(source="c", target="/b")])
    b = container_body(make_task(c), "n", SEC, CFG, [])
    srcs = [m["Source"] for m in b["HostConfig"]["Mounts"]]
    assert len(set(srcs)) == 2


def _info(status, code=0, oom=False, health=None, error="", nets=None):
    st = {"Status": status, "ExitCode": code, "OOMKilled": oom, "Error": error,
          "StartedAt": "2024-01-02T03:04:05.123456789Z", "FinishedAt": "2024-01-02T03:05:05.5Z"}
    if health:
        st["Health"] = {"Status": health}
    return {"Id": "cid", "State": st, "NetworkSettings": {"Networks": nets or {}}}


def test_status_mapping():
    s = container_status(_info("running", health="starting",
                               nets={"todo_front": {"IPAddress": "10.0.1.5"}, "x": {"IPAddress": ""}}))
    assert (s.state, s.health, s.container_id, s.addresses) == ("running", "starting", "cid", {"todo_front": "10.0.1.5"})
    assert container_status(_info("running", health="healthy")).health == "healthy"
    assert container_status(_info("running")).health is None
    s = container_status(_info("exited", 0))
    assert (s.state, s.exit_code, s.err) == ("complete", 0, "")
    s = container_status(_info("exited", 3))
    assert (s.state, s.exit_code, s.err) == ("failed", 3, "task: non-zero exit (3)")
    s = container_status(_info("exited", 137, oom=True))
    assert s.state == "failed" and "OOM" in s.message and s.err == "task: non-zero exit (137)"
    assert container_status(_info("created")).state == "ready"
    s = container_status(_info("created", 127, error="OCI runtime create failed: exec: no such file"))
    assert s.state == "failed" and s.err.startswith("starting container failed: OCI") and s.exit_code == 127
    s = container_status(_info("exited", 127, error="exec: \"nope\": executable file not found"))
    assert s.state == "failed" and "executable file not found" in s.err
    assert UNHEALTHY_ERR == "task: non-zero exit (1): dockerexec: unhealthy container"


def test_parse_time():
    assert parse_time("0001-01-01T00:00:00Z") == 0.0
    assert parse_time("2024-01-02T03:04:05.5Z") == pytest.approx(1704164645.5)
    assert parse_time("2024-01-02T04:04:05.25+01:00") == pytest.approx(1704164645.25)


# -- engine helpers (pure) ---------------------------------------------------

def test_negotiate_and_filters():
    assert negotiate_version("1.43") == "1.41"
    assert negotiate_version("1.40") == "1.40"
    assert negotiate_version(None) == "1.41"
    assert json.loads(encode_filters({"status": ["running"]}, labels={"a": "b", "c": None})) == {
        "status": ["running"], "label": ["a=b", "c"]}
    assert encode_filters(None) is None


def test_split_image_ref():
    assert split_image_ref("busybox") == ("busybox", "latest")
    assert split_image_ref("shoal/busybox:1") == ("shoal/busybox", "1")
    assert split_image_ref("reg:5000/a/b") == ("reg:5000/a/b", "latest")
    assert split_image_ref("reg:5000/a/b:2") == ("reg:5000/a/b", "2")
    assert split_image_ref("a@sha256:00") == ("a", "sha256:00")


def test_demux_and_lines_any_chunking():
    def frame(sid, data):
        return bytes([sid, 0, 0, 0]) + len(data).to_bytes(4, "big") + data
    raw = frame(1, b"hello\nwor") + frame(2, b"oops\n") + frame(1, b"ld\n")
    for size in (1, 3, 7, len(raw)):
        d, sp = StreamDemux(), {1: LineSplitter(), 2: LineSplitter()}
        out = []
        for i in range(0, len(raw), size):
            for sid, payload in d.feed(raw[i:i + size]):
                out += [(sid, l) for l in sp[sid].feed(payload)]
        assert out == [(1, "hello"), (2, "oops"), (1, "world")]


def test_json_stream_any_chunking():
    raw = '{"a": 1}\n{"b": "é\\n}"}{"c": [1, 2]}\r\n'.encode()
    for size in (1, 2, 5, len(raw)):
        dec, out = JSONStreamDecoder(), []
        for i in range(0, len(raw), size):
            out += dec.feed(raw[i:i + size])
        assert out == [{"a": 1}, {"b": "é\n}"}, {"c": [1, 2]}]


# -- files (tmp dirs, no Docker) -------------------------------------------------

def test_prepare_and_cleanup_files(tmp_path):
    c = ContainerSpec(image="i", configs=[FileRef(source="cfg", target="/etc/a", mode=0o640, uid="12", gid="34")],
                      secrets=[FileRef(source="pw", target="/run/secrets/pw")])
    t = make_task(c)
    cfg, sec = str(tmp_path / "cfg"), str(tmp_path / "sec")
    mounts = files.prepare_task_files(t, {"cfg": b"\x00data"}, {"pw": b"s3cret"}, cfg, sec)
    import os
    import stat
    p = mounts[0]["Source"]
    st = os.stat(p)
    assert open(p, "rb").read() == b"\x00data"
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (12, 34)
    ps = mounts[1]["Source"]
    assert stat.S_IMODE(os.stat(ps).st_mode) == 0o444 and open(ps, "rb").read() == b"s3cret"
    assert not [n for n in os.listdir(os.path.dirname(p)) if n.startswith(".tmp")]
    files.cleanup_task_files(t.id, cfg, sec)
    assert not os.path.exists(p) and not os.path.exists(ps)


def test_missing_file_data(tmp_path):
    c = ContainerSpec(image="i", secrets=[FileRef(source="pw", target="/run/secrets/pw")])
    with pytest.raises(files.MissingFileData, match="secret not found: pw"):
        files.prepare_task_files(make_task(c), {}, {}, str(tmp_path / "c"), str(tmp_path / "s"))


def test_observe_waits_for_the_engines_oom_flag_of_a_killed_limited_container(monkeypatch):
    """The engine sets OOMKilled from containerd's OOM event, which may come after the exit:
    a container killed (137) under a memory limit is looked at again before it is called a
    plain kill (the suite saw OOMKilled false right after the wait once)."""
    import asyncio

    from shoal.agent import executor as ex_mod

    def limited(oom: bool, code: int = 137, memory: int = 16 << 20) -> dict:
        info = _info("exited", code, oom=oom)
        info["HostConfig"] = {"Memory": memory}
        return info

    class Containers:
        def __init__(self, answers):
            self.answers = list(answers)
            self.asked = 0

        async def inspect(self, cid):
            self.asked += 1
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    class Engine:
        def __init__(self, answers):
            self.containers = Containers(answers)

    slept: list[float] = []

    async def no_sleep(s):
        slept.append(s)

    monkeypatch.setattr(ex_mod.asyncio, "sleep", no_sleep)

    async def observe(answers):
        engine = Engine(answers)
        executor = ex_mod.Executor.__new__(ex_mod.Executor)
        executor.engine = engine
        executor._containers = {}
        st = await executor.observe("cid")
        return st, engine.containers.asked

    st, asked = asyncio.run(observe([limited(False), limited(False), limited(True)]))
    assert "out of memory" in st.message and st.exit_code == 137 and asked == 3
    slept.clear()
    st, asked = asyncio.run(observe([limited(False)]))  # killed for another reason: said after ~0.35 s
    assert st.message == "started" and asked == 1 + len(ex_mod.OOM_SETTLE) and sum(slept) < 0.5
    for plain in (limited(False, code=3), limited(False, memory=0), _info("exited", 137)):
        slept.clear()
        st, asked = asyncio.run(observe([plain]))  # not a limited kill: looked at once
        assert asked == 1 and slept == []
