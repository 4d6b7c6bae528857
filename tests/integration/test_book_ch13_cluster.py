"""The book's chapter 13 (to-do list on a swarm) on three lab hosts (issues #13 and #14).

The unchanged stack files v1.yml … v6.yml are deployed one after the other on a cluster of
three nodes, `storage=raid` on lab2: the web replicas land on different nodes, the database on
lab2 and only there (its volume too), the app answers on `localhost:8080` of every node from
every replica (the routing mesh over the overlay), the web app reaches the database on another
node by name, and the to-do list keeps its items across `stack rm` and v6.

The steps depend on each other and run in file order (module scope).
"""
from __future__ import annotations

import json

import pytest

from conftest import FIXTURES
from lab import Lab, until

pytestmark = [pytest.mark.integration, pytest.mark.lab]

BOOK = FIXTURES / "diamol-ch13" / "todo-list"
WEB, DB = "todo_todo-web", "todo_todo-db"
HTTP = """import json, sys, urllib.error, urllib.parse, urllib.request
url, form = sys.argv[1], sys.argv[2]
data = urllib.parse.urlencode({"item": form}).encode() if form else None
try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
        print(json.dumps([r.status, r.read().decode(errors="replace")]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode(errors="replace")]))
except Exception as e:
    print(json.dumps([0, repr(e)]))
"""


@pytest.fixture(scope="module")
def book(lab3):
    lab: Lab = lab3
    lab._run("load", "diamol/ch06-todo-list:latest", "diamol/postgres:11.5", "diamol/postgres:11.6", timeout=900)
    lab.cluster()
    yield lab


def get(lab: Lab, host: str, path: str, item: str = "") -> tuple[int, str]:
    """A request to `localhost:8080` on `host` (POST of the /new form when `item` is given)."""
    out = lab.exec(host, "python3", "-c", HTTP, f"http://127.0.0.1:8080{path}", item, timeout=60).stdout
    status, body = json.loads(out)
    return status, body


def deploy(lab: Lab, version: str) -> None:
    lab.shoal("lab1", "stack", "deploy", "-c", str(BOOK / f"{version}.yml"), "--wait", "--timeout", "240", "todo",
              timeout=300)


def on_every_node(lab: Lab, what: str, pred) -> None:
    for h in lab.hosts:
        until(f"{what} on {h}", lambda: pred(h), timeout=90, interval=0.5)


def settled(lab: Lab, service: str, n: int) -> dict[str, int]:
    on = lab.running_on(service)
    return on if sum(on.values()) == n and sum(len(lab.containers(h, service)) for h in lab.hosts) == n else {}


def test_v1_app_answers_on_localhost_8080_of_every_node(book):
    lab = book
    deploy(lab, "v1")
    on_every_node(lab, "the app", lambda h: (r := get(lab, h, "/"))[0] == 200 and "You have 0 items to do." in r[1])


def test_v2_replicas_on_two_nodes_with_limits_each_answering_on_every_node(book):
    lab = book
    deploy(lab, "v2")
    on = until("2 replicas", lambda: settled(lab, WEB, 2))
    assert len(on) == 2, on  # spread: one replica on each of two nodes
    short = set()
    for h in on:
        (cid,) = lab.containers(h, WEB)
        nano, mem = lab.docker(h, "inspect", "-f", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", cid).split()
        assert (int(nano), int(mem)) == (500_000_000, 104_857_600)
        short.add(cid[:12])
    for h in lab.hosts:  # a node without a replica too: the mesh goes over the overlay
        seen: set[str] = set()

        def both(host=h, seen=seen):
            status, body = get(lab, host, "/diagnostics")
            seen.update(s for s in short if status == 200 and s in body)
            return seen == short

        until(f"both replicas answering /diagnostics on {h}", both, timeout=60, interval=0.2)


def test_v3_v4_config_secret_and_items_across_nodes(book):
    lab = book
    lab.shoal("lab1", "config", "create", "todo-list-config", str(BOOK / "configs" / "config.json"))
    deploy(lab, "v3")
    on_every_node(lab, "the error page (no connection string yet)",
                  lambda h: (r := get(lab, h, "/"))[0] == 500 and "The database cannot be reached." in r[1])
    lab.shoal("lab1", "secret", "create", "todo-list-secret", str(BOOK / "secrets" / "secrets.json"))
    deploy(lab, "v4")
    until("v4 settled", lambda: settled(lab, WEB, 1) and settled(lab, DB, 1))
    on_every_node(lab, "the app on Postgres", lambda h: (r := get(lab, h, "/"))[0] == 200 and "items to do" in r[1])
    status, body = get(lab, "lab3", "/new", item="Buy milk (v4)")
    assert status == 200 and "Buy milk (v4)" in body, body[:500]
    on_every_node(lab, "the item listed", lambda h: "Buy milk (v4)" in get(lab, h, "/list")[1])


def test_v5_database_on_the_raid_node_only(book):
    lab = book
    lab.shoal("lab1", "node", "update", "--label-add", "storage=raid", "lab2")
    deploy(lab, "v5")
    until("v5 settled", lambda: settled(lab, WEB, 1) and settled(lab, DB, 1))
    assert lab.running_on(DB) == {"lab2": 1}
    assert [h for h in lab.hosts if "todo_todo-db-data" in lab.docker(h, "volume", "ls", "-q")] == ["lab2"]
    on_every_node(lab, "the app on the new database", lambda h: get(lab, h, "/")[0] == 200)
    status, body = get(lab, "lab1", "/new", item="Keep me (v5)")
    assert status == 200 and "Keep me (v5)" in body, body[:500]


def test_stack_rm_keeps_the_volume_and_v6_shows_the_same_items_on_every_node(book):
    lab = book
    lab.shoal("lab1", "stack", "rm", "todo")
    until("the stack's containers gone", lambda: not any(
        lab.docker(h, "ps", "-aq", "--filter", "label=com.docker.stack.namespace=todo").strip() for h in lab.hosts),
        timeout=120)
    deploy(lab, "v6")
    until("v6 settled", lambda: settled(lab, WEB, 1) and settled(lab, DB, 1))
    db = [t for t in lab.tasks(DB) if t["DesiredState"] == "Running"]
    assert len(db) == 1 and db[0]["Node"] == "lab2" and db[0]["Image"] == "diamol/postgres:11.6"
    assert [h for h in lab.hosts if "todo_todo-db-data" in lab.docker(h, "volume", "ls", "-q")] == ["lab2"]
    on_every_node(lab, "the item added before stack rm", lambda h: "Keep me (v5)" in get(lab, h, "/list")[1])
    assert "Buy milk (v4)" not in get(lab, "lab3", "/list")[1]  # v4's database had no volume
    lab.shoal("lab1", "stack", "rm", "todo")
