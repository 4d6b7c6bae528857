"""Issue 2 on the real engine: deploy, inspect, scale, redeploy, self-heal, restart, rm."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import containers, docker, http_get

pytestmark = pytest.mark.integration

STACK = """
services:
  web:
    image: shoal/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    init: true
    environment:
      GREETING: "${GREETING:-hello}"
    ports:
      - "18081:80"
    deploy:
      replicas: 2
      resources:
        limits:
          cpus: "0.50"
          memory: 100M
          pids: 64
      restart_policy:
        delay: 1s
  worker:
    image: shoal/busybox:latest
    command: ["sh", "-c", "echo started; exec sleep 3600"]
    init: true
    stop_grace_period: 2s
    volumes:
      - data:/data
volumes:
  data:
"""


def write(tmp: Path, text: str, name: str = "stack.yml") -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


def service_containers(service: str) -> list[str]:
    return containers(**{"shoal.service.name": service})


def cgroup(cid: str, controller: str, name: str) -> str:
    full = docker("inspect", "-f", "{{.Id}}", cid).strip()
    return Path(f"/sys/fs/cgroup/{controller}/docker/{full}/{name}").read_text().strip()


@pytest.fixture(scope="module")
def stack(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("core")
    path = write(tmp, STACK)
    out = cluster.out("stack", "deploy", "-c", path, "core")
    assert "Creating network core_default" in out and "Creating service core_web" in out
    cluster.wait_for(lambda: cluster.running("core_web") == 2 and cluster.running("core_worker") == 1,
                     timeout=90, what="core stack running")
    return {"path": path, "tmp": tmp}


def test_ls_services_ps_columns(cluster, stack):
    ls = cluster.out("stack", "ls")
    assert ls.splitlines()[0].split() == ["NAME", "SERVICES"]
    assert any(line.split() == ["core", "2"] for line in ls.splitlines())
    svcs = cluster.out("stack", "services", "core").splitlines()
    assert svcs[0].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    web = [l for l in svcs if "core_web" in l][0]
    assert "replicated" in web and "2/2" in web and "*:18081->80/tcp" in web
    ps = cluster.out("stack", "ps", "core").splitlines()
    assert ps[0].split() == ["ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS"]
    names = {l.split()[1] for l in ps[1:]}
    assert {"core_web.1", "core_web.2", "core_worker.1"} <= names
    assert all("Running" in l for l in ps[1:])
    q = cluster.out("service", "ls", "-q").split()
    assert len(q) >= 2 and all(len(i) == 25 for i in q)
    js = cluster.json_lines("stack", "ps", "core")
    assert {j["Name"] for j in js} >= {"core_web.1", "core_web.2"}


def test_labels_on_everything(cluster, stack):
    for cid in service_containers("core_web"):
        labels = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", cid))
        assert labels["com.docker.stack.namespace"] == "core"
        assert labels["shoal.managed"] == "true"
    net = json.loads(docker("network", "inspect", "core_default"))[0]
    assert net["Labels"]["com.docker.stack.namespace"] == "core"
    # not "Attachable": an engine in Swarm mode takes attachable networks for its own
    assert net["Attachable"] is False and net["Scope"] == "local"


def test_limits_are_enforced_by_the_kernel(cluster, stack):
    cids = service_containers("core_web")
    assert len(cids) == 2
    for cid in cids:
        assert cgroup(cid, "cpu", "cpu.cfs_quota_us") == "50000"
        assert cgroup(cid, "cpu", "cpu.cfs_period_us") == "100000"
        assert cgroup(cid, "memory", "memory.limit_in_bytes") == str(100 * 1024 * 1024)
        assert cgroup(cid, "pids", "pids.max") == "64"


def test_published_port_reaches_every_replica(cluster, stack):
    seen = set()
    for _ in range(40):
        code, body = http_get("http://127.0.0.1:18081/")
        assert code == 200
        seen.add(body.strip())
        if len(seen) == 2:
            break
    hostnames = {docker("inspect", "-f", "{{.Config.Hostname}}", c).strip() for c in service_containers("core_web")}
    assert seen == hostnames


def test_inspect_and_logs(cluster, stack):
    js = json.loads(cluster.out("service", "inspect", "core_web"))
    assert js[0]["spec"]["name"] == "core_web" and js[0]["spec"]["replicas"] == 2
    pretty = cluster.out("service", "inspect", "--pretty", "core_web")
    assert "Name:" in pretty and "core_web" in pretty and "Replicas:" in pretty
    logs = cluster.wait_for(lambda: cluster.out("service", "logs", "core_worker"), timeout=30)
    assert "started" in logs and "core_worker.1." in logs
    tail = cluster.out("service", "logs", "--tail", "1", "core_worker")
    assert tail.count("\n") == 1


def test_scale_up_and_down(cluster, stack):
    assert "core_web scaled to 4" in cluster.out("service", "scale", "core_web=4")
    cluster.wait_for(lambda: cluster.running("core_web") == 4 and len(service_containers("core_web")) == 4,
                     timeout=60, what="4 replicas")
    cluster.out("service", "scale", "core_web=2")
    cluster.wait_for(lambda: len(service_containers("core_web")) == 2, timeout=60, what="2 replicas")
    bad = cluster.run("service", "scale", "core_web=x", check=False)
    assert bad.returncode != 0 and "invalid scale specifier" in bad.stderr


def test_redeploy_updates_only_what_changed(cluster, stack):
    worker_before = set(service_containers("core_worker"))
    web_before = set(service_containers("core_web"))
    out = cluster.out("stack", "deploy", "-c", stack["path"], "core", env={"GREETING": "bonjour"})
    assert "Updating service core_web" in out and "core_worker" not in out
    cluster.wait_for(lambda: (set(service_containers("core_web")).isdisjoint(web_before)
                              and len(service_containers("core_web")) == 2
                              and cluster.running("core_web") == 2), timeout=90, what="web replaced")
    assert set(service_containers("core_worker")) == worker_before
    cid = service_containers("core_web")[0]
    env = docker("inspect", "-f", "{{json .Config.Env}}", cid)
    assert "GREETING=bonjour" in env
    # the previous tasks stay in the slot's history as shut down
    ps = cluster.out("stack", "ps", "core")
    assert "\\_ core_web.1" in ps and "Shutdown" in ps


def test_killed_container_is_replaced(cluster, stack):
    before = service_containers("core_web")
    docker("kill", before[0])
    cluster.wait_for(lambda: len(service_containers("core_web")) == 2 and before[0] not in service_containers("core_web")
                     and cluster.running("core_web") == 2, timeout=60, what="replacement after kill")
    ps = cluster.out("stack", "ps", "--no-trunc", "core")
    assert "Failed" in ps and "non-zero exit (137)" in ps


def test_removed_container_is_replaced(cluster, stack):
    before = service_containers("core_worker")
    docker("rm", "-f", before[0])
    cluster.wait_for(lambda: len(service_containers("core_worker")) == 1 and before[0] not in service_containers(
        "core_worker"), timeout=60, what="replacement after rm")


def test_daemon_restart_adopts_containers(cluster, stack):
    before = sorted(containers(**{"com.docker.stack.namespace": "core"}))
    history = len(cluster.tasks("core"))
    cluster.out("stop")
    cluster.out("start")
    assert sorted(containers(**{"com.docker.stack.namespace": "core"})) == before
    assert len(cluster.tasks("core")) == history
    # kill -9: the store survives, containers are adopted, not restarted
    pid = int(Path(cluster.data_dir, "shoal.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    cluster.out("start")
    time.sleep(3)
    assert sorted(containers(**{"com.docker.stack.namespace": "core"})) == before
    cluster.wait_for(lambda: cluster.running("core_web") == 2, timeout=30)
    assert len(cluster.tasks("core")) == history


def test_other_containers_are_never_touched(cluster, stack, tmp_path):
    other = docker("run", "-d", "--label", "shoal.test=bystander", "shoal/busybox:latest", "sleep", "600").strip()
    try:
        cluster.out("stack", "deploy", "-c", write(tmp_path, STACK.replace("18081", "18082"), "b.yml"), "bystand")
        cluster.wait_for(lambda: cluster.running("bystand_web") == 2, timeout=90)
        cluster.out("stack", "rm", "bystand")
        cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "bystand"}), timeout=60)
        assert docker("inspect", "-f", "{{.State.Running}}", other).strip() == "true"
    finally:
        docker("rm", "-f", other, check=False)


def test_bad_input_keeps_what_runs(cluster, stack, tmp_path):
    before = sorted(containers(**{"com.docker.stack.namespace": "core"}))
    bad = write(tmp_path, STACK.replace("replicas: 2", "replicas: two"), "bad.yml")
    p = cluster.run("stack", "deploy", "-c", bad, "core", check=False)
    assert p.returncode == 1
    assert "bad.yml:" in p.stderr and "services.web.deploy.replicas" in p.stderr
    p = cluster.run("stack", "deploy", "-c", write(tmp_path, "services:\n  x:\n    command: [a]\n", "noimg.yml"),
                    "core", check=False)
    assert p.returncode == 1 and "noimg.yml" in p.stderr and "image" in p.stderr
    p = cluster.run("stack", "deploy", "-c", write(tmp_path, "services: [\n", "syntax.yml"), "core", check=False)
    assert p.returncode == 1 and "syntax.yml:" in p.stderr
    assert sorted(containers(**{"com.docker.stack.namespace": "core"})) == before
    assert cluster.running("core_web") == 2


def test_unplaceable_and_missing_image_tasks_explain_themselves(cluster, tmp_path):
    text = """
services:
  huge:
    image: shoal/busybox:latest
    command: ["sleep", "60"]
    deploy:
      resources:
        reservations:
          memory: 1000G
  ghost:
    image: shoal/does-not-exist:1.0
    deploy:
      restart_policy:
        delay: 1s
"""
    cluster.out("stack", "deploy", "-c", write(tmp_path, text, "bad.yml"), "why")
    cluster.wait_for(lambda: "insufficient resources on 1 node" in cluster.out("stack", "ps", "--no-trunc", "why"),
                     timeout=30, what="pending reason")
    ps = cluster.wait_for(lambda: (lambda o: o if "Rejected" in o else "")(
        cluster.out("stack", "ps", "--no-trunc", "why")), timeout=60, what="rejected ghost")
    assert "Pending" in ps and "no suitable node (insufficient resources on 1 node)" in ps
    assert "shoal/does-not-exist" in ps
    # it keeps trying per the restart policy instead of hanging
    cluster.wait_for(lambda: cluster.out("stack", "ps", "why").count("Rejected") >= 2, timeout=60)
    cluster.out("stack", "rm", "why")


def test_init_twice_and_stack_config(cluster, stack, fixtures_dir):
    p = cluster.run("init", check=False)
    assert p.returncode == 1 and "already part of a cluster" in p.stderr
    files = [str(fixtures_dir / "diamol-ch14/numbers" / f) for f in ("docker-compose.yml", "prod.yml")]
    out = cluster.out("stack", "config", "-c", files[0], "-c", files[1])
    assert "numbers-api" in out and "replicas: 6" in out


def test_stack_rm_keeps_volumes(cluster, stack):
    cid = service_containers("core_worker")[0]
    docker("exec", cid, "sh", "-c", "echo kept > /data/file")
    out = cluster.out("stack", "rm", "core")
    assert "Removing service core_web" in out and "Removing network core_default" in out
    cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "core"}), timeout=60,
                     what="containers gone")
    cluster.wait_for(lambda: "core_default" not in docker("network", "ls", "--format", "{{.Name}}"), timeout=30)
    assert "core_data" in docker("volume", "ls", "--format", "{{.Name}}")
    assert "18081" not in subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    cluster.out("stack", "deploy", "-c", stack["path"], "core")
    cluster.wait_for(lambda: cluster.running("core_worker") == 1, timeout=90)
    cid = service_containers("core_worker")[0]
    assert docker("exec", cid, "cat", "/data/file").strip() == "kept"
    cluster.out("stack", "rm", "core")
    cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "core"}), timeout=60)
    docker("volume", "rm", "core_data", check=False)


def test_openapi_document_lists_every_route(cluster):
    from shoal.cli.api_client import Api
    from shoal.paths import Layout
    doc = Api(Layout(cluster.data_dir)).get("/openapi.json")
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/stacks/{name}", "/v1/services", "/v1/tasks", "/v1/nodes", "/v1/configs", "/v1/secrets",
                 "/v1/agent/assignments"):
        assert path in doc["paths"], path
    assert "StackSpec" in doc["components"]["schemas"]


def test_restart_policies(cluster, tmp_path):
    text = """
services:
  flaky:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exit 3"]
    deploy:
      restart_policy:
        condition: on-failure
        delay: 1s
        max_attempts: 2
  oneshot:
    image: shoal/busybox:latest
    command: ["sh", "-c", "echo done"]
    deploy:
      restart_policy:
        condition: on-failure
  never:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exit 1"]
    deploy:
      restart_policy:
        condition: none
"""
    cluster.out("stack", "deploy", "-c", write(tmp_path, text, "restart.yml"), "rp")

    def states(service):
        return [t["CurrentState"].split()[0] for t in cluster.json_lines("service", "ps", service)]

    # on-failure with max_attempts 2: the first run and two restarts, then it stays down
    cluster.wait_for(lambda: states("rp_flaky").count("Failed") == 3, timeout=60, what="3 failed attempts")
    time.sleep(4)
    assert states("rp_flaky").count("Failed") == 3 and len(states("rp_flaky")) == 3
    # a clean exit is not a failure: complete, never restarted
    cluster.wait_for(lambda: states("rp_oneshot") == ["Complete"], timeout=60, what="complete")
    cluster.wait_for(lambda: states("rp_never") == ["Failed"], timeout=60, what="failed once")
    time.sleep(3)
    assert states("rp_oneshot") == ["Complete"] and states("rp_never") == ["Failed"]
    # a finished task keeps its stopped container while in history: its logs can be read
    assert "done" in cluster.out("service", "logs", "rp_oneshot")
    cluster.out("stack", "rm", "rp")
