"""Issue 5 on the real engine: a stateful service stays with its data.

The book's todo-list v5.yml/v6.yml as stack `vt`: the database waits for its node label,
starts without a redeploy once the label is there, and the rows written into it survive
`stack rm` + deploy of v6 (newer database image, same volume). Then `shoal volume
ls|inspect|rm|prune`: rm refuses volumes in use (by a service's spec, by a container),
prune removes only unused Shoal volumes.

Steps depend on each other and run in file order on one cluster (module scope). Volumes
outlive clusters (they are the engine's), so the module removes the ones it made.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import FIXTURES, ShoalCli, containers, docker, http_get, until

pytestmark = pytest.mark.integration

BOOK = FIXTURES / "diamol-ch13" / "todo-list"
STACK = "vt"
WEB, DB = f"{STACK}_todo-web", f"{STACK}_todo-db"
VOLUME = f"{STACK}_todo-db-data"
URL = "http://127.0.0.1:8080"
CONSTRAINT_REASON = "no suitable node (scheduling constraints not satisfied on 1 node)"
MADE_HERE = [VOLUME, "vp_used", "vp_free"]  # every volume this module creates
ITEM = "Keep me across stack rm (issue 5)"


def _rm_volumes() -> None:
    existing = set(docker("volume", "ls", "-q").split())
    for v in MADE_HERE:
        if v in existing:
            docker("volume", "rm", "-f", v, check=False)


@pytest.fixture(scope="module")
def todo(cluster: ShoalCli, images) -> ShoalCli:
    assert (BOOK / "v5.yml").exists(), f"the book's stack files are missing at {BOOK}"
    _rm_volumes()  # leftovers of an interrupted earlier run of this module
    cluster.out("config", "create", "todo-list-config", "configs/config.json", cwd=str(BOOK))
    cluster.out("secret", "create", "todo-list-secret", "secrets/secrets.json", cwd=str(BOOK))
    yield cluster
    for s in (STACK, "vp"):
        cluster.run("stack", "rm", s, check=False)
    try:
        cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": STACK})
                         and not containers(**{"com.docker.stack.namespace": "vp"}), timeout=120)
    finally:
        _rm_volumes()


def post_item(item: str) -> tuple[int, str]:
    data = urllib.parse.urlencode({"item": item}).encode()
    req = urllib.request.Request(URL + "/new", data=data,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def db_tasks(cli: ShoalCli) -> list[dict]:
    return [t for t in cli.json_lines("stack", "ps", "--no-trunc", STACK)
            if t["Name"].startswith(DB + ".")]


def settled(cli: ShoalCli, service: str, replicas: int = 1) -> bool:
    return cli.running(service) == replicas and len(containers(**{"shoal.service.name": service})) == replicas


def volumes(cli: ShoalCli) -> dict[str, str]:
    """`shoal volume ls`: name -> node."""
    lines = cli.out("volume", "ls").splitlines()
    assert lines[0].split() == ["DRIVER", "VOLUME", "NAME", "NODE"]
    return {line.split()[1]: line.split()[2] for line in lines[1:]}


def test_v5_database_waits_for_the_label_then_starts_without_redeploy(todo: ShoalCli):
    todo.out("stack", "deploy", "-c", "v5.yml", STACK, cwd=str(BOOK))

    def pending():
        ts = db_tasks(todo)
        return ts and all(t["CurrentState"].startswith("Pending") and json.loads(t["Error"]) == CONSTRAINT_REASON
                          for t in ts) and ts
    until("todo-db pending on its constraint", pending, timeout=120)
    table = todo.out("stack", "ps", "--no-trunc", STACK)
    assert CONSTRAINT_REASON in table
    time.sleep(3)  # and it stays so
    assert pending() and not containers(**{"shoal.service.name": DB})

    # As in the book: shoal node update --label-add storage=raid $(shoal node ls -q)
    p = subprocess.run("shoal node update --label-add storage=raid $(shoal node ls -q)", shell=True,
                       capture_output=True, text=True, env=todo.env, timeout=60)
    assert p.returncode == 0, p.stderr
    labelled = time.monotonic()
    until("todo-db running after the label", lambda: settled(todo, DB), timeout=120)
    started_after = time.monotonic() - labelled
    assert started_after < 90, f"todo-db took {started_after:.0f}s to start after the label"
    assert len([t for t in db_tasks(todo) if not t["Name"].startswith(" ")]) == 1  # same service, no redeploy

    until("the app on Postgres", lambda: (r := http_get(URL + "/", timeout=10))[0] == 200 and r, timeout=180)
    status, body = until("the item to be added", lambda: (r := post_item(ITEM))[0] == 200 and r, timeout=60)
    assert ITEM in body


def test_volume_ls_and_inspect(todo: ShoalCli):
    me = json.loads(todo.out("node", "inspect", "self"))[0]
    host = me["description"]["hostname"]
    vols = until("the volume to be reported", lambda: VOLUME in volumes(todo) and volumes(todo), timeout=60)
    assert vols[VOLUME] == host
    assert VOLUME in todo.out("volume", "ls", "-q").split()
    assert todo.out("volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}").split() == [VOLUME]
    [info] = json.loads(todo.out("volume", "inspect", VOLUME))
    assert info["Name"] == VOLUME and info["Node"] == me["id"] and info["NodeHostname"] == host
    assert info["Labels"]["com.docker.stack.namespace"] == STACK
    assert info["Services"] == [DB]
    assert len(info["UsedBy"]) == 1 and info["UsedBy"][0].startswith(DB + ".1.")
    p = todo.run("volume", "inspect", "vt_no-such-volume", check=False)
    assert p.returncode == 1 and "no such volume: vt_no-such-volume" in p.stderr


def test_volume_rm_refuses_a_volume_a_service_uses(todo: ShoalCli):
    p = todo.run("volume", "rm", VOLUME, check=False)
    assert p.returncode == 1
    assert f"volume {VOLUME} is in use by service(s) {DB}" in p.stderr, p.stderr
    assert VOLUME in docker("volume", "ls", "-q").split()


def test_stack_rm_keeps_the_volume_and_v6_finds_the_rows(todo: ShoalCli):
    out = todo.out("stack", "rm", STACK)
    assert "volume" not in out.lower()
    until("the stack's containers to go", lambda: not containers(**{"com.docker.stack.namespace": STACK}),
          timeout=120)
    time.sleep(6)  # a heartbeat later, the volume is still there and still listed
    assert VOLUME in docker("volume", "ls", "-q").split()
    assert VOLUME in volumes(todo)

    todo.out("stack", "deploy", "-c", "v6.yml", STACK, cwd=str(BOOK))
    until("v6 settled", lambda: settled(todo, WEB) and settled(todo, DB), timeout=240)
    cid = containers(**{"shoal.service.name": DB})[0]
    assert docker("inspect", "-f", "{{.Config.Image}}", cid).strip() == "diamol/postgres:11.6"
    mounts = json.loads(docker("inspect", "-f", "{{json .Mounts}}", cid))
    assert any(m.get("Name") == VOLUME and m["Destination"] == "/var/lib/postgresql/data" for m in mounts), mounts
    until("the row written before stack rm",
          lambda: (r := http_get(URL + "/list", timeout=10))[0] == 200 and ITEM in r[1], timeout=180)


def test_volume_rm_refuses_a_volume_a_container_uses(todo: ShoalCli, busybox: str):
    todo.out("stack", "rm", STACK)
    until("the stack's containers to go", lambda: not containers(**{"com.docker.stack.namespace": STACK}),
          timeout=120)
    name = "vt-volume-user"
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, "-v", f"{VOLUME}:/data", busybox, "sleep", "600")
    try:
        p = todo.run("volume", "rm", VOLUME, check=False)
        assert p.returncode == 1
        assert f"volume {VOLUME} is in use by container(s): {name} (running)" in p.stderr, p.stderr
    finally:
        docker("rm", "-f", name)
    assert todo.out("volume", "rm", VOLUME).split() == [VOLUME]
    assert VOLUME not in docker("volume", "ls", "-q").split()
    assert VOLUME not in volumes(todo)
    p = todo.run("volume", "rm", VOLUME, check=False)
    assert p.returncode == 1 and f"no such volume: {VOLUME}" in p.stderr


PRUNE_STACK = """
services:
  used:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
    volumes: ["used:/data"]
  free:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
    volumes: ["free:/data"]
volumes:
  used:
  free:
"""


def test_volume_prune_removes_only_unused_volumes(todo: ShoalCli, tmp_path: Path):
    path = tmp_path / "vp.yml"
    path.write_text(PRUNE_STACK)
    todo.out("stack", "deploy", "-c", str(path), "vp")
    until("vp running", lambda: settled(todo, "vp_used") and settled(todo, "vp_free"), timeout=120)
    scope = ["--filter", "label=com.docker.stack.namespace=vp"]  # other stacks' volumes on this engine are not ours
    # Everything is in use: nothing to prune.
    assert "vp_" not in todo.out("volume", "prune", "-f", *scope)

    # Drop service `free`: its volume becomes unused (but stays: only prune removes it).
    path.write_text(PRUNE_STACK.replace("  free:\n    image", "  gone:\n    image").replace(
        '    volumes: ["free:/data"]\n', ''))
    todo.out("stack", "deploy", "--prune", "-c", str(path), "vp")
    until("vp_free gone", lambda: not containers(**{"shoal.service.name": "vp_free"}), timeout=120)
    assert {"vp_used", "vp_free"} <= set(docker("volume", "ls", "-q").split())
    out = todo.out("volume", "prune", "-f", *scope)
    assert out.split() == ["Deleted", "Volumes:", "vp_free"], out
    existing = set(docker("volume", "ls", "-q").split())
    assert "vp_free" not in existing and "vp_used" in existing
    assert "vp_free" not in volumes(todo)

    # Without -f it asks, and "no" keeps everything.
    p = todo.run("volume", "prune", *scope, input="n\n")
    assert "Are you sure" in p.stdout and "vp_used" in set(docker("volume", "ls", "-q").split())

    todo.out("stack", "rm", "vp")
    until("vp's containers to go", lambda: not containers(**{"com.docker.stack.namespace": "vp"}), timeout=120)
    assert "vp_used" in set(docker("volume", "ls", "-q").split())  # stack rm never removes volumes
    assert todo.out("volume", "prune", "-f", *scope).split() == ["Deleted", "Volumes:", "vp_used"]
