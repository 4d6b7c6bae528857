"""Engine client against the real Docker Engine (/var/run/docker.sock)."""
from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import pytest_asyncio

from shoal.agent.engine import Conflict, Engine, EngineError, NotFound

IMAGE = "shoal/busybox:latest"
SOCK = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").replace("unix://", "")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio,
    pytest.mark.skipif(not os.path.exists(SOCK), reason="no Docker Engine socket"),
]


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest_asyncio.fixture
async def eng(run_id):
    e = Engine()
    yield e
    # clean up only what this test created (label shoal.test.run=<run_id>)
    labels = {"shoal.test": "executor", "shoal.test.run": run_id}
    for c in await e.containers.list(labels=labels):
        try:
            await e.containers.remove(c["Id"], force=True, v=True)
        except NotFound:
            pass
    for n in await e.networks.list(labels=labels):
        await e.networks.remove(n["Id"])
    for v in await e.volumes.list(labels=labels):
        await e.volumes.remove(v["Name"], force=True)
    await e.close()


def lbl(run_id: str) -> dict:
    return {"shoal.test": "executor", "shoal.test.run": run_id}


async def run_container(eng, run_id, cmd, name=None, **extra) -> str:
    body = {"Image": IMAGE, "Cmd": cmd, "Labels": lbl(run_id), "StopTimeout": 1,
            "HostConfig": {"Init": True, **extra.pop("HostConfig", {})}, **extra}
    cid = await eng.containers.create(name or f"shoal-test-{run_id}-{uuid.uuid4().hex[:4]}", body)
    await eng.containers.start(cid)
    return cid


async def test_version_and_info(eng):
    v = await eng.version()
    assert eng.api_version == "1.41"
    assert v["ApiVersion"]
    info = await eng.info()
    assert "Containers" in info and info["NCPU"] >= 1
    assert await eng.ping()


async def test_errors_carry_engine_message(eng):
    with pytest.raises(NotFound) as ei:
        await eng.containers.inspect("shoal-no-such-container-" + uuid.uuid4().hex)
    assert ei.value.status == 404 and "No such container" in ei.value.message
    with pytest.raises(EngineError) as ei:
        await eng.containers.create(None, {"Image": "shoal/no-such-image:zzz"})
    assert ei.value.status == 404 and "No such image" in ei.value.message


async def test_lifecycle_wait_logs_tail(eng, run_id):
    cid = await run_container(eng, run_id, ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; exit 4"])
    assert (await eng.containers.wait(cid))["StatusCode"] == 4
    info = await eng.containers.inspect(cid)
    assert info["State"]["ExitCode"] == 4
    assert [l async for l in eng.containers.logs(cid)] == ["line1", "line2", "line3", "line4", "line5"]
    assert [l async for l in eng.containers.logs(cid, tail=2)] == ["line4", "line5"]
    ts = [l async for l in eng.containers.logs(cid, tail=1, timestamps=True, with_stream=True)]
    assert len(ts) == 1 and ts[0][0] == "stdout" and ts[0][1].endswith(" line5") and ts[0][1][:4].isdigit()
    listed = await eng.containers.list(labels={"shoal.test.run": run_id})
    assert [c["Id"] for c in listed] == [cid]
    await eng.containers.remove(cid)
    with pytest.raises(NotFound):
        await eng.containers.inspect(cid)


async def test_logs_demultiplexed(eng, run_id):
    cid = await run_container(eng, run_id, ["sh", "-c", "echo out1; echo err1 >&2; printf 'no-newline'"])
    await eng.containers.wait(cid)
    got = [l async for l in eng.containers.logs(cid, with_stream=True)]
    assert sorted(got) == [("stderr", "err1"), ("stdout", "no-newline"), ("stdout", "out1")]
    assert [l async for l in eng.containers.logs(cid, stdout=False)] == ["err1"]


async def test_logs_tty_and_follow(eng, run_id):
    cid = await run_container(eng, run_id, ["sh", "-c", "echo a; sleep 1; echo b"], Tty=True)
    got = []
    async for line in eng.containers.logs(cid, follow=True):
        got.append(line)
    assert got == ["a", "b"]


async def test_stop_kill_exec(eng, run_id):
    cid = await run_container(eng, run_id, ["sleep", "300"])
    r = await eng.containers.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    t0 = time.monotonic()
    assert await eng.containers.stop(cid, timeout=5) is True
    assert time.monotonic() - t0 < 5  # init forwards SIGTERM
    assert await eng.containers.stop(cid, timeout=1) is False  # already stopped: 304
    await eng.containers.start(cid)
    await eng.containers.kill(cid, "SIGKILL")
    assert (await eng.containers.wait(cid))["StatusCode"] == 137
    with pytest.raises(Conflict):
        name = (await eng.containers.inspect(cid))["Name"].lstrip("/")
        await eng.containers.create(name, {"Image": IMAGE})


async def test_events_see_die(eng, run_id):
    since = int(time.time()) - 1
    cid = await run_container(eng, run_id, ["sh", "-c", "exit 2"])

    async def first_die():
        async for ev in eng.events({"type": ["container"], "event": ["die"], "container": [cid]}, since=since):
            return ev

    ev = await asyncio.wait_for(first_die(), 20)
    assert ev["Action"] == "die" and ev["Actor"]["ID"] == cid
    assert ev["Actor"]["Attributes"]["exitCode"] == "2"
    assert ev["Actor"]["Attributes"]["shoal.test.run"] == run_id


async def test_networks(eng, run_id):
    name = f"shoal-test-net-{run_id}"
    nid = await eng.networks.create(name, "bridge", {"com.docker.network.bridge.enable_icc": "true"},
                                    subnets=["10.213.0.0/24"], ip_range="10.213.0.128/25",
                                    gateway="10.213.0.1", internal=True, attachable=True, labels=lbl(run_id))
    info = await eng.networks.inspect(nid)
    assert info["Name"] == name and info["Internal"] is True and info["Attachable"] is True
    assert info["IPAM"]["Config"] == [{"Subnet": "10.213.0.0/24", "IPRange": "10.213.0.128/25",
                                       "Gateway": "10.213.0.1"}]
    assert info["Labels"]["shoal.test.run"] == run_id
    assert [n["Id"] for n in await eng.networks.list(labels={"shoal.test.run": run_id})] == [nid]
    cid = await run_container(eng, run_id, ["sleep", "300"])
    await eng.networks.connect(nid, cid, aliases=["foo"], ipv4="10.213.0.200")
    ci = await eng.containers.inspect(cid)
    ep = ci["NetworkSettings"]["Networks"][name]
    assert ep["IPAddress"] == "10.213.0.200" and "foo" in ep["Aliases"]
    await eng.networks.disconnect(nid, cid, force=True)
    assert name not in (await eng.containers.inspect(cid))["NetworkSettings"]["Networks"]
    await eng.containers.remove(cid, force=True)
    await eng.networks.remove(nid)
    with pytest.raises(NotFound):
        await eng.networks.inspect(nid)


async def test_volumes(eng, run_id):
    name = f"shoal-test-vol-{run_id}"
    v = await eng.volumes.create(name, "local", {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}, lbl(run_id))
    assert v["Name"] == name
    info = await eng.volumes.inspect(name)
    assert info["Options"]["type"] == "tmpfs" and info["Labels"]["shoal.test.run"] == run_id
    assert [x["Name"] for x in await eng.volumes.list(labels={"shoal.test.run": run_id})] == [name]
    await eng.volumes.remove(name)
    with pytest.raises(NotFound):
        await eng.volumes.inspect(name)


async def test_images_inspect_and_pull_error(eng):
    info = await eng.images.inspect(IMAGE)
    assert IMAGE in info["RepoTags"]
    assert await eng.images.exists(IMAGE)
    assert not await eng.images.exists("shoal/no-such-image:zzz")
    with pytest.raises(EngineError) as ei:
        await eng.images.pull("shoal/no-such-image-" + uuid.uuid4().hex[:6] + ":1")
    assert ei.value.message  # e.g. 'Get "https://registry-1.docker.io/v2/": … no such host'


async def test_docker_host_env(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix://" + SOCK)
    async with Engine() as e:
        assert e.socket_path == SOCK
        assert (await e.version())["ApiVersion"]
