"""A manager whose cluster state lives in etcd (issue #15, its first step): `shoal init --store
etcd://…` against a real etcd member and the real engine. The stack deploys and runs, a
secret reaches its replica while etcd holds only ciphertext, the daemon's restart reloads
everything from etcd without restarting a task, and `leave --force` erases the cluster's keys
(and only those). A store that does not answer is refused before anything is made."""
from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import ShoalCli, _destroy, _new_cluster, containers
from etcd_server import EtcdServer

pytestmark = pytest.mark.integration

MARK = f"etcd-secret-{uuid.uuid4().hex}"

STACK = """\
version: "3.7"
services:
  app:
    image: shoal/busybox:latest
    command: ["sh", "-c", "sleep 3600"]
    deploy:
      replicas: 2
    secrets:
      - source: api-key
        target: /run/secrets/api-key
secrets:
  api-key:
    file: ./api-key.txt
"""


def etcd_keys(server: EtcdServer, prefix: str = "/shoal/") -> dict[bytes, bytes]:
    """Every key under `prefix` with its value, read straight from etcd."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()}).encode()
    req = urllib.request.Request(server.url + "/v3/kv/range", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        kvs = json.load(r).get("kvs") or []
    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", "")) for kv in kvs}


def etcd_put(server: EtcdServer, key: str, value: str) -> None:
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()}).encode()
    req = urllib.request.Request(server.url + "/v3/kv/put", body, {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    server = EtcdServer(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


def test_a_manager_on_etcd_runs_a_stack_and_keeps_it_across_a_restart(engine, busybox, etcd, tmp_path):
    store = f"etcd://127.0.0.1:{etcd.client_port}"
    cli = _new_cluster(tmp_path, ("--store", store))
    try:
        info = cli.out("info")
        assert f"Store: {store}" in info
        cluster_id = json.loads((Path(cli.data_dir) / "cluster.json").read_text())["cluster_id"]
        prefix = f"/shoal/{cluster_id}/"

        (tmp_path / "api-key.txt").write_text(MARK)
        (tmp_path / "stack.yml").write_text(STACK)
        cli.out("stack", "deploy", "-c", str(tmp_path / "stack.yml"), "--wait", "--timeout", "120", "st",
                cwd=str(tmp_path), timeout=180)
        ids = sorted(containers(**{"com.docker.stack.namespace": "st"}))
        assert len(ids) == 2
        for cid in ids:  # the secret's bytes inside each replica
            got = subprocess.run(["docker", "exec", cid, "cat", "/run/secrets/api-key"], capture_output=True,
                                 text=True, timeout=30)
            assert got.stdout == MARK

        keys = etcd_keys(etcd, prefix)
        assert any(k.startswith(f"{prefix}o/service/".encode()) for k in keys), sorted(keys)[:10]
        assert sum(k.startswith(f"{prefix}o/task/".encode()) for k in keys) == 2
        blob = b"\n".join(keys.values())
        assert MARK.encode() not in blob and base64.b64encode(MARK.encode())[:20] not in blob, \
            "the secret's plaintext is in etcd"

        # The daemon restarts: everything comes back from etcd, and no task is restarted.
        cli.out("stop")
        cli.out("start")
        cli.wait_for(lambda: "2/2" in cli.out("service", "ls"), timeout=60, what="st_app 2/2 after the restart")
        assert sorted(containers(**{"com.docker.stack.namespace": "st"})) == ids
        assert "st_app" in cli.out("service", "ls") and "api-key" in cli.out("secret", "ls")

        etcd_put(etcd, "/other/key", "someone else's")  # another user of the same etcd
        other = etcd_keys(etcd, "/other/")
        cli.out("leave", "--force", timeout=120)
        assert etcd_keys(etcd, prefix) == {}, "the cluster's keys stay in etcd after the last manager left"
        assert etcd_keys(etcd, "/other/") == other
    finally:
        _destroy(cli)


def test_init_refuses_a_store_that_does_not_answer_and_leaves_nothing(engine, tmp_path):
    cli = ShoalCli(str(tmp_path / "data"))
    p = cli.run("init", "--store", "etcd://127.0.0.1:1", check=False, timeout=60)
    assert p.returncode != 0 and "etcd at http://127.0.0.1:1 does not answer" in p.stderr, p.stderr
    assert not (tmp_path / "data" / "cluster.json").exists()
    p = cli.run("init", "--store", "mysql://db", check=False, timeout=60)
    assert p.returncode != 0 and "--store" in p.stderr and "etcd://HOST:PORT" in p.stderr, p.stderr
