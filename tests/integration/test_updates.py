"""Issue 6 on the real engine: rolling updates, rollback, `--wait`, and the book's chapter 14.

Replica counts are sampled from the engine (`docker ps`) in a background thread while an
update runs, so "never below / above desired" is checked on what really ran.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _sampler import ContainerSampler
from conftest import FIXTURES, containers, docker, http_get

pytestmark = pytest.mark.integration

STACK = """
services:
  stopfirst:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
    environment:
      V: "{vs}"
    deploy:
      replicas: 6
      update_config:
        parallelism: 2
        order: stop-first
        monitor: 1s
  startfirst:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
    environment:
      V: "{vf}"
    deploy:
      replicas: 3
      update_config:
        parallelism: 1
        order: start-first
        monitor: 1s
  fragile:
    image: shoal/busybox:latest
    command: ["sh", "-c", "{fragile}"]
    init: true
    stop_grace_period: 2s
    deploy:
      replicas: 3
      restart_policy:
        delay: 1s
      update_config:
        delay: 3s
        monitor: 4s
        failure_action: pause
"""
GOOD = "exec sleep 3600"
BAD = "sleep 1; exit 3"
TAG = "shoal/busybox:updates-test"


def write(tmp: Path, vs=1, vf=1, fragile=GOOD) -> str:
    p = tmp / f"upd-{vs}-{vf}-{len(fragile)}.yml"
    p.write_text(STACK.format(vs=vs, vf=vf, fragile=fragile))
    return str(p)


def svc_json(cluster, name: str) -> dict:
    return json.loads(cluster.out("service", "inspect", name))[0]


def pretty(cluster, name: str) -> str:
    return cluster.out("service", "inspect", "--pretty", name)


def live_tasks(cluster, name: str) -> list[dict]:
    return [t for t in cluster.json_lines("service", "ps", "--no-trunc", name)
            if not t["Name"].lstrip().startswith("\\_")]


@pytest.fixture(scope="module")
def upd(cluster, busybox, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upd")
    docker("tag", busybox, TAG)
    p = cluster.run("stack", "deploy", "--wait", "--timeout", "240", "-c", write(tmp), "upd", timeout=300)
    assert p.returncode == 0, p.stderr
    assert cluster.running("upd_stopfirst") == 6 and cluster.running("upd_startfirst") == 3
    yield tmp
    cluster.run("stack", "rm", "upd", check=False)
    docker("rmi", TAG, check=False)


def test_stop_first_parallelism_2(cluster, upd):
    with ContainerSampler("upd_stopfirst") as s:
        p = cluster.run("stack", "deploy", "--wait", "--timeout", "240", "-c", write(upd, vs=2), "upd", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Updating service upd_stopfirst" in p.stdout
    assert "upd_startfirst" not in p.stdout.replace("upd_startfirst: ", "")  # unchanged: not updated
    counts = s.counts()
    assert max(counts) <= 6, f"stop-first exceeded the desired count: {counts}"
    assert min(counts) >= 4, f"more than 2 slots updating at once: {counts}"
    assert min(counts) < 6, f"the sampler never saw the update happen: {counts}"
    new = svc_json(cluster, "upd_stopfirst")["spec_version"]
    final = s.sample()
    assert len(final) == 6 and all(x.version == new for x in final)
    assert "State:" in pretty(cluster, "upd_stopfirst") and "completed" in pretty(cluster, "upd_stopfirst")
    for cid in containers(**{"shoal.service.name": "upd_stopfirst"}):
        assert "V=2" in docker("inspect", "-f", "{{json .Config.Env}}", cid)


def test_start_first_never_below_desired(cluster, upd):
    with ContainerSampler("upd_startfirst") as s:
        p = cluster.run("stack", "deploy", "--wait", "--timeout", "240", "-c", write(upd, vs=2, vf=2), "upd",
                        timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    counts = s.counts()
    assert min(counts) >= 3, f"start-first dropped below the desired count: {counts}"
    assert max(counts) == 4, f"parallelism 1 start-first should run exactly one extra task at a time: {counts}"
    new = svc_json(cluster, "upd_startfirst")["spec_version"]
    assert all(x.version == new for x in s.sample())


def test_failed_update_pauses_and_wait_says_so(cluster, upd):
    before = set(containers(**{"shoal.service.name": "upd_fragile"}))
    p = cluster.run("stack", "deploy", "--wait", "--timeout", "240", "-c", write(upd, 2, 2, BAD), "upd",
                    timeout=300, check=False)
    assert p.returncode != 0
    assert "upd_fragile" in p.stderr and "update paused" in p.stderr, p.stderr
    text = pretty(cluster, "upd_fragile")
    assert re.search(r"State:\s+paused", text), text
    assert "paused due to failure or early termination of task" in text
    # paused within the 3 s delay after the first slot: the other two slots were never touched
    assert len(before & set(containers(**{"shoal.service.name": "upd_fragile"}))) == 2
    # ...and stays paused (the failed slot's restarts are not a new update)
    assert re.search(r"State:\s+paused", pretty(cluster, "upd_fragile"))
    # the next update resumes
    p = cluster.run("stack", "deploy", "--wait", "--timeout", "240", "-c", write(upd, 2, 2, GOOD), "upd",
                    timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"State:\s+completed", pretty(cluster, "upd_fragile"))
    assert cluster.running("upd_fragile") == 3


def test_service_update_flags_and_rollback(cluster, upd):
    name = "upd_startfirst"
    # --env-add
    p = cluster.run("service", "update", "--env-add", "EXTRA=yes", "--wait", "--timeout", "180", name, timeout=240)
    assert p.returncode == 0, p.stderr
    cids = containers(**{"shoal.service.name": name})
    assert len(cids) == 3 and all("EXTRA=yes" in docker("inspect", "-f", "{{json .Config.Env}}", c) for c in cids)
    # --force replaces every task although nothing changed
    before = {t["ID"] for t in live_tasks(cluster, name)}
    p = cluster.run("service", "update", "--force", "--wait", "--timeout", "180", name, timeout=240)
    assert p.returncode == 0, p.stderr
    after = live_tasks(cluster, name)
    assert len(after) == 3 and before.isdisjoint({t["ID"] for t in after})
    # --replicas: scaling adds a task, restarts none
    p = cluster.run("service", "update", "--replicas", "4", "--wait", "--timeout", "180", name, timeout=240)
    assert p.returncode == 0, p.stderr
    now = {t["ID"] for t in live_tasks(cluster, name)}
    assert len(now) == 4 and {t["ID"] for t in after} <= now
    assert cluster.running(name) == 4
    # --image
    p = cluster.run("service", "update", "--image", TAG, "--wait", "--timeout", "180", name, timeout=240)
    assert p.returncode == 0, p.stderr
    assert {t["Image"] for t in live_tasks(cluster, name)} == {TAG}
    assert re.search(r"State:\s+completed", pretty(cluster, name))
    # rollback: back to the previous image, UpdateStatus says so
    p = cluster.run("service", "rollback", "--wait", "--timeout", "180", name, timeout=240)
    assert p.returncode == 0, p.stderr
    assert "rollback" in p.stdout
    text = pretty(cluster, name)
    assert re.search(r"State:\s+rollback_completed", text), text
    assert "Image:" in text and "shoal/busybox:latest" in text
    assert {t["Image"] for t in live_tasks(cluster, name)} == {"shoal/busybox:latest"}
    assert cluster.running(name) == 4
    # a rollback with no previous spec is refused with a reason
    p = cluster.run("service", "rollback", "upd_fragile", check=False)
    assert p.returncode == 0 or "previous spec" in p.stderr


# ---------------------------------------------------------------------------------------------
# The book's chapter 14: numbers-api with a health check, start-first batches of 3, rollback.
# ---------------------------------------------------------------------------------------------

BASE = ["docker-compose.yml", "prod.yml", "prod-healthcheck.yml", "prod-update-config.yml",
        "prod-rollback-config.yml"]
API = "numbers_numbers-api"


def deploy_numbers(cluster, d: Path, *extra: str, timeout: float = 420):
    args = []
    for f in BASE + list(extra):
        args += ["-c", str(d / f)]
    return cluster.run("stack", "deploy", "--wait", "--timeout", str(timeout), *args, "numbers",
                       timeout=timeout + 60, check=False)


@pytest.fixture(scope="module")
def numbers(cluster, images):
    d = FIXTURES / "diamol-ch14" / "numbers"
    assert d.exists(), f"the book's fixtures are missing at {d}"
    p = deploy_numbers(cluster, d)
    assert p.returncode == 0, p.stdout + p.stderr
    yield d
    cluster.run("stack", "rm", "numbers", check=False)
    cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "numbers"}), timeout=120)


def test_ch14_deploys_healthy(cluster, numbers):
    svcs = {s["Name"]: s for s in cluster.json_lines("stack", "services", "numbers")}
    assert svcs[API]["Replicas"] == "6/6"
    assert svcs["numbers_numbers-web"]["Mode"] == "global"
    text = pretty(cluster, API)
    assert "Parallelism: 3" in text.replace("\t", " ").replace("  ", " ") or re.search(r"Parallelism:\s+3", text)
    assert re.search(r"Update order:\s+start-first", text)
    health = {docker("inspect", "-f", "{{.State.Health.Status}}", c).strip()
              for c in containers(**{"shoal.service.name": API})}
    assert health == {"healthy"}
    code, _ = http_get("http://127.0.0.1:80/health")
    assert code == 200


def test_ch14_good_update_rolls_in_batches_of_3_start_first(cluster, numbers):
    old = svc_json(cluster, API)["spec_version"]
    with ContainerSampler(API, interval=0.3) as s:
        p = deploy_numbers(cluster, numbers, "v5.yml")
    assert p.returncode == 0, p.stdout + p.stderr
    new = svc_json(cluster, API)["spec_version"]
    assert new > old
    healthy = s.counts(lambda x: x.health == "healthy")
    total = s.counts()
    assert min(healthy) >= 6, f"healthy replicas dropped below 6 during a start-first update: {healthy}"
    assert max(total) <= 9, f"more than parallelism 3 extra tasks: {total}"
    assert max(total) == 9, f"no batch of 3 seen: {total}"
    fresh = s.counts(lambda x: x.version == new and x.health != "healthy")
    assert max(fresh) <= 3
    final = s.sample()
    assert len(final) == 6 and {x.version for x in final} == {new} and {x.health for x in final} == {"healthy"}
    text = pretty(cluster, API)
    assert "UpdateStatus:" in text and re.search(r"State:\s+completed", text), text
    assert "diamol/ch14-numbers-api:v5" in text


def test_ch14_bad_update_is_rolled_back(cluster, numbers):
    good = svc_json(cluster, API)
    with ContainerSampler(API, interval=0.3) as s:
        p = deploy_numbers(cluster, numbers, "v5-bad.yml")
    assert p.returncode != 0, p.stdout + p.stderr
    assert API in p.stderr and "rolled back" in p.stderr, p.stderr
    text = pretty(cluster, API)
    assert re.search(r"State:\s+rollback_completed", text), text
    assert "dockerexec: unhealthy container" in p.stderr, p.stderr  # why: the health check failed
    after = svc_json(cluster, API)
    assert after["spec"]["container"]["env"].get("Broken") == "false"
    assert after["spec"]["container"]["image"] == good["spec"]["container"]["image"]
    healthy = s.counts(lambda x: x.health == "healthy")
    assert min(healthy) >= 6, f"healthy replicas dropped below 6 during the bad update: {healthy}"
    assert max(s.counts(lambda x: x.health == "unhealthy")) >= 1 or "unhealthy" in cluster.out(
        "stack", "ps", "--no-trunc", "numbers")
    ps = cluster.out("stack", "ps", "--no-trunc", "numbers")
    assert "dockerexec: unhealthy container" in ps
    cluster.wait_for(lambda: cluster.running(API) == 6 and len(containers(**{"shoal.service.name": API})) == 6,
                     timeout=120, what="6 good replicas after the rollback")


SLOW_STOP = """
services:
  slowstop:
    image: shoal/busybox:latest
    # no init: httpd as PID 1 ignores SIGTERM, so the old version answers for its whole grace period
    command: ["sh", "-c", "mkdir -p /w && echo {v} > /w/index.html && exec httpd -f -p 80 -h /w"]
    stop_grace_period: 8s
    deploy:
      replicas: 1
      update_config:
        order: start-first
        monitor: 1s
    ports:
      - "8087:80"
"""


def test_wait_returns_when_only_the_new_version_runs(cluster, tmp_path):
    """After a start-first update, `stack deploy --wait` returns once the old version's container
    is gone (it kept answering for its grace period), not as soon as the new one runs."""
    f = tmp_path / "slow.yml"
    f.write_text(SLOW_STOP.format(v="old-version"))
    cluster.out("stack", "deploy", "-c", str(f), "--wait", "--timeout", "60", "ss")
    old = containers(**{"shoal.service.name": "ss_slowstop"})
    assert len(old) == 1
    f.write_text(SLOW_STOP.format(v="new-version"))
    out = cluster.out("stack", "deploy", "-c", str(f), "--wait", "--timeout", "90", "ss")
    assert "converged" in out
    running = containers(**{"shoal.service.name": "ss_slowstop"})
    assert len(running) == 1 and running != old, (old, running)
    for _ in range(10):  # every answer is the new version's
        assert http_get("http://127.0.0.1:8087/")[1].strip() == "new-version"
    cluster.out("stack", "rm", "ss")
