"""Executor against the real Docker Engine: tasks → containers and back."""
from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import pytest_asyncio

from shoal.agent import files
from shoal.agent.engine import Engine, NotFound
from shoal.agent.executor import UNHEALTHY_ERR, Executor, TaskRejected, container_name
from shoal.model.objects import Task
from shoal.model.specs import (ContainerSpec, FileRef, HealthCheck, NetworkAttachment, ResourceRequirements,
                               Resources, ServiceSpec)

IMAGE = "shoal/busybox:latest"
SOCK = "/var/run/docker.sock"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio,
    pytest.mark.skipif(not os.path.exists(SOCK), reason="no Docker Engine socket"),
]


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest_asyncio.fixture
async def env(run_id, tmp_path):
    eng = Engine(SOCK)
    sec = str(tmp_path / "secrets")
    ex = Executor(eng, f"node-{run_id}", configs_dir=str(tmp_path / "configs"), secrets_dir=sec)
    yield eng, ex
    labels = {"shoal.test": "executor", "shoal.test.run": run_id}
    for c in await eng.containers.list(labels=labels):
        try:
            await eng.containers.remove(c["Id"], force=True, v=True)
        except NotFound:
            pass
    for n in await eng.networks.list(labels=labels):
        await eng.networks.remove(n["Id"])
    await eng.close()
    files.unmount_secrets_tmpfs(sec)


def make_task(run_id: str, slot: int = 1, **ckw) -> Task:
    resources = ckw.pop("resources", None) or ResourceRequirements()
    networks = ckw.pop("networks", [])
    ckw.setdefault("command", ["sleep", "300"])
    ckw.setdefault("init", True)
    ckw.setdefault("stop_grace_period", 2)
    c = ContainerSpec(image=ckw.pop("image", IMAGE),
                      labels={"shoal.test": "executor", "shoal.test.run": run_id}, **ckw)
    spec = ServiceSpec(name=f"t{run_id}_web", stack=f"t{run_id}", container=c, resources=resources,
                       networks=networks)
    return Task(id=uuid.uuid4().hex[:20], service_id="svc-" + run_id, service_name=spec.name, slot=slot,
                spec=spec, spec_version=3)


async def run_task(ex, task, configs=None, secrets=None, networks=None):
    reports = []
    cid = await ex.prepare(task, configs or {}, secrets or {}, networks or {},
                           report=lambda s, m: reports.append((s, m)))
    assert ("preparing", "preparing") in reports and reports[-1][0] == "ready"
    assert await ex.start(task) == cid
    return cid


async def poll(fn, pred, timeout=30.0, step=0.2):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        v = await fn()
        if pred(v):
            return v
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; last value {v!r}")
        await asyncio.sleep(step)


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


async def test_limits_in_cgroups(env, run_id):
    eng, ex = env
    t = make_task(run_id, resources=ResourceRequirements(
        limits=Resources(nano_cpus=500_000_000, memory_bytes=100 * 1024 * 1024, pids=50)))
    cid = await run_task(ex, t)
    info = await eng.containers.inspect(cid)
    assert info["Name"] == "/" + container_name(t)
    labels = info["Config"]["Labels"]
    assert labels["shoal.managed"] == "true" and labels["shoal.task.id"] == t.id
    assert labels["shoal.task.name"] == f"{t.service_name}.1" and labels["shoal.spec.version"] == "3"
    assert labels["com.docker.stack.namespace"] == f"t{run_id}"
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "no"
    cg = "/sys/fs/cgroup"
    if not os.path.exists(f"{cg}/cpu/docker/{cid}"):
        pytest.skip("not cgroup v1 with cgroupfs driver")
    assert read(f"{cg}/cpu/docker/{cid}/cpu.cfs_quota_us") == "50000"
    assert read(f"{cg}/cpu/docker/{cid}/cpu.cfs_period_us") == "100000"
    assert read(f"{cg}/memory/docker/{cid}/memory.limit_in_bytes") == "104857600"
    assert read(f"{cg}/pids/docker/{cid}/pids.max") == "50"
    st = await ex.observe(cid)
    assert st.state == "running" and st.container_id == cid and st.health is None
    await ex.stop(t)
    await ex.remove(t)
    with pytest.raises(NotFound):
        await eng.containers.inspect(cid)


async def test_config_and_secret_files(env, run_id):
    eng, ex = env
    cfg_bytes = b'{"port": 8080}\n\x00\xffbinary'
    t = make_task(run_id,
                  configs=[FileRef(source="app_cfg", target="/etc/app/config.json", mode=0o640, uid="0", gid="42")],
                  secrets=[FileRef(source="app_pw", target="/run/secrets/db_password"),
                           FileRef(source="app_pw", target="pw2", mode=0o400, uid="1000", gid="1000")])
    cid = await run_task(ex, t, configs={"app_cfg": cfg_bytes}, secrets={"app_pw": b"s3cr3t"})
    r = await eng.containers.exec(cid, ["cat", "/etc/app/config.json"])
    assert r.exit_code == 0 and r.stdout == cfg_bytes
    r = await eng.containers.exec(cid, ["stat", "-c", "%a %u %g", "/etc/app/config.json"])
    assert r.stdout.decode().strip() == "640 0 42"
    r = await eng.containers.exec(cid, ["cat", "/run/secrets/db_password"])
    assert r.stdout == b"s3cr3t"
    r = await eng.containers.exec(cid, ["stat", "-c", "%a %u %g", "/run/secrets/db_password", "/run/secrets/pw2"])
    assert r.stdout.decode().split("\n")[:2] == ["444 0 0", "400 1000 1000"]
    mounts = (await eng.containers.exec(cid, ["cat", "/proc/mounts"])).stdout.decode().splitlines()
    by_target = {line.split()[1]: line.split() for line in mounts}
    assert by_target["/run/secrets/db_password"][2] == "tmpfs"
    assert "ro" in by_target["/run/secrets/db_password"][3].split(",")
    assert by_target["/run/secrets/pw2"][2] == "tmpfs"
    assert by_target["/etc/app/config.json"][2] != "tmpfs"
    assert "ro" in by_target["/etc/app/config.json"][3].split(",")
    r = await eng.containers.exec(cid, ["sh", "-c", "echo x > /etc/app/config.json"])
    assert r.exit_code != 0  # read-only
    assert files.fs_type(ex.secrets_dir) == "tmpfs"
    task_sec_dir = os.path.join(ex.secrets_dir, t.id)
    assert os.path.isdir(task_sec_dir)
    await ex.remove(cid)
    assert not os.path.exists(task_sec_dir)
    assert not os.path.exists(os.path.join(ex.configs_dir, t.id))


async def test_missing_secret_rejected(env, run_id):
    _, ex = env
    t = make_task(run_id, secrets=[FileRef(source="nope", target="/run/secrets/nope")])
    with pytest.raises(TaskRejected, match="secret not found: nope"):
        await ex.prepare(t, {}, {}, {})


async def test_healthcheck_healthy_and_unhealthy(env, run_id):
    eng, ex = env
    good = make_task(run_id, slot=1, healthcheck=HealthCheck(test=["CMD", "true"], interval=0.5, timeout=2,
                                                             retries=1))
    bad = make_task(run_id, slot=2, healthcheck=HealthCheck(test=["CMD-SHELL", "exit 1"], interval=0.5,
                                                            timeout=2, retries=1))
    c1 = await run_task(ex, good)
    c2 = await run_task(ex, bad)
    st = await ex.observe(c1)
    assert st.state == "running" and st.health in ("starting", "healthy")
    st = await poll(lambda: ex.observe(c1), lambda s: s.health == "healthy")
    assert st.state == "running"
    st = await poll(lambda: ex.observe(c2), lambda s: s.health == "unhealthy")
    assert st.state == "running"  # the caller decides to kill it
    st = await ex.kill_unhealthy(bad)
    assert (st.state, st.err) == ("failed", UNHEALTHY_ERR)
    assert (await eng.containers.inspect(c2))["State"]["Running"] is False


async def test_exit_codes_mapped(env, run_id):
    eng, ex = env
    ok = make_task(run_id, slot=1, command=["sh", "-c", "echo done"])
    bad = make_task(run_id, slot=2, command=["sh", "-c", "exit 3"])
    oom = make_task(run_id, slot=3, command=["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"],
                    resources=ResourceRequirements(limits=Resources(memory_bytes=16 * 1024 * 1024)))
    missing = make_task(run_id, slot=4, command=["/no/such/binary"], init=False)
    for t in (ok, bad, oom):
        await run_task(ex, t)
    st = await ex.wait(ok)
    assert (st.state, st.exit_code, st.err, st.message) == ("complete", 0, "", "finished")
    st = await ex.wait(bad)
    assert (st.state, st.exit_code, st.err) == ("failed", 3, "task: non-zero exit (3)")
    st = await ex.wait(oom)
    assert (st.state, st.exit_code, st.err) == ("failed", 137, "task: non-zero exit (137)")
    assert "OOM" in st.message
    await ex.prepare(missing, {}, {}, {})
    with pytest.raises(Exception):
        await ex.start(missing)
    st = await ex.observe(missing)
    assert st.state == "failed" and "no such file" in st.err.lower()
    managed = await ex.list_managed()
    assert {ok.id, bad.id, oom.id, missing.id} <= set(managed)
    assert managed[ok.id]["Labels"]["shoal.node.id"] == ex.node_id


async def test_two_networks(env, run_id):
    eng, ex = env
    lbl = {"shoal.test": "executor", "shoal.test.run": run_id}
    n1, n2 = f"t{run_id}_front", f"t{run_id}_back"
    id1 = await eng.networks.create(n1, "bridge", subnets=["10.214.1.0/24"], labels=lbl)
    id2 = await eng.networks.create(n2, "bridge", subnets=["10.214.2.0/24"], labels=lbl)
    t = make_task(run_id, networks=[NetworkAttachment(network=n1, aliases=["www"]),
                                    NetworkAttachment(network=n2, ipv4_address="10.214.2.77")])
    cid = await run_task(ex, t, networks={n1: id1, n2: id2})
    st = await ex.observe(cid)
    assert set(st.addresses) == {n1, n2}
    assert st.addresses[n1].startswith("10.214.1.") and st.addresses[n2] == "10.214.2.77"
    nets = (await eng.containers.inspect(cid))["NetworkSettings"]["Networks"]
    assert set(nets) == {n1, n2}
    # a second container on the back network reaches the task at its fixed address
    peer = make_task(run_id, slot=2, networks=[NetworkAttachment(network=n2)],
                     command=["sh", "-c", "ping -c1 -W2 10.214.2.77 >/dev/null && echo ok"], init=False)
    await run_task(ex, peer, networks={n2: id2})
    st2 = await ex.wait(peer)
    assert st2.state == "complete", [l async for l in ex.logs(peer)]
    await ex.remove(t)
    await ex.remove(peer)


async def test_logs_tail(env, run_id):
    _, ex = env
    t = make_task(run_id, command=["sh", "-c", "for i in 1 2 3 4 5 6; do echo l$i; done"])
    await run_task(ex, t)
    await ex.wait(t)
    assert [l async for l in ex.logs(t, tail=3)] == ["l4", "l5", "l6"]


async def test_pull_failure_rejects(env, run_id):
    _, ex = env
    t = make_task(run_id, image=f"shoal/does-not-exist-{run_id}:v1")
    reports = []
    with pytest.raises(TaskRejected) as ei:
        await ex.prepare(t, {}, {}, {}, report=lambda s, m: reports.append((s, m)))
    reason = ei.value.reason
    assert reason.startswith(f"pull of shoal/does-not-exist-{run_id}:v1 failed: ") and len(reason) > 60
    assert ("preparing", f"pulling shoal/does-not-exist-{run_id}:v1") in reports


async def test_adopt_after_restart(env, run_id, tmp_path):
    eng, ex = env
    t = make_task(run_id)
    cid = await run_task(ex, t)
    # a fresh executor (agent restarted) finds the container by label and by name
    ex2 = Executor(eng, ex.node_id, configs_dir=ex.configs_dir, secrets_dir=ex.secrets_dir)
    managed = await ex2.list_managed()
    assert managed[t.id]["Id"] == cid
    assert (await ex2.observe(t)).state == "running"
    # prepare again for the same task reuses its container instead of failing on the name
    assert await ex2.prepare(t, {}, {}, {}) == cid
    await ex2.stop(t, grace=1)
    assert (await ex2.observe(t)).state == "failed"  # SIGTERM through init: exit 143
    await ex2.remove(t)
    await ex2.stop(t)  # gone: no error
