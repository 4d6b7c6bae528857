"""The manager API against hostile input (issue #12): a real manager in-process (store, CA,
orchestrator, HTTP over its unix socket and TLS), no engine. Nothing sent may crash it
(500), poison its store, hang a long poll, or come back in an error when it is a secret."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from manager_inproc import Manager
from shoal.model.objects import Node, Service, Task, TaskStatus
from shoal.store.sqlite import SqliteStore

SPEC = {"name": "web", "container": {"image": "busybox"}, "networks": [{"network": "net"}]}




BODY_ROUTES = [("POST", "/v1/stacks/s"), ("POST", "/v1/services/web/update"), ("POST", "/v1/services/web/scale"),
               ("POST", "/v1/nodes/self/update"), ("POST", "/v1/configs"), ("POST", "/v1/secrets"),
               ("POST", "/v1/networks"), ("POST", "/v1/volumes/prune"), ("POST", "/v1/unlock-key"),
               ("POST", "/v1/cluster/update"), ("POST", "/v1/join-tokens/worker"), ("POST", "/v1/nodes/x/remove")]


async def test_bodies_that_are_not_objects_or_not_typed_get_400(mgr):
    await mgr.call("POST", "/v1/networks", {"name": "net"})
    for method, path in BODY_ROUTES:
        for raw in (b"[1,2]", b'"x"', b"12", b"null", b"{", b"\xff\xfe"):
            status, body = await mgr.call(method, path, raw=raw)
            assert status == 400, (path, raw, status, body)
    assert (await mgr.call("POST", "/v1/services/web/scale", {"replicas": "many"}))[0] == 400
    assert (await mgr.call("POST", "/v1/services/web/scale", {"replicas": 10 ** 20}))[0] == 400


async def test_body_limits_are_per_route(mgr):
    big = b'{"key": "' + b"x" * (70 * 1024) + b'"}'
    status, body = await mgr.call("POST", "/v1/unlock-key", raw=big)
    assert status == 413 and "at most 65536" in body["message"]
    # a config may be 1000 KB (base64: 1.33 MB): its route takes it
    data = base64.b64encode(b"y" * 1000 * 1024).decode()
    assert (await mgr.call("POST", "/v1/configs", {"name": "big", "data": data}))[0] == 201


async def test_non_finite_and_huge_numbers_never_reach_the_store(mgr, tmp_path):
    await mgr.call("POST", "/v1/networks", {"name": "net"})
    stack = {"name": "s", "services": [{**SPEC, "name": "s_web", "stack": "s"}], "networks": []}
    assert (await mgr.call("POST", "/v1/stacks/s", {"stack": stack}))[0] == 200
    _, svc = await mgr.call("GET", "/v1/services/s_web")
    raw = json.dumps({"spec": {**svc["spec"], "update_config": {"delay": 1e309}}}).replace("Infinity", "1e309")
    status, body = await mgr.call("POST", "/v1/services/s_web/update", raw=raw.encode())
    assert status == 400 and "update_config.delay" in body["message"], body
    for bad in ({"stop_grace_period": 1e308}, {"stop_grace_period": -1}):
        spec = {**svc["spec"], "container": {**svc["spec"]["container"], **bad}}
        status, body = await mgr.call("POST", "/v1/services/s_web/update", {"spec": spec})
        assert status == 400 and "stop_grace_period" in body["message"]
    status, body = await mgr.call("POST", "/v1/nodes/self/update", {"label_add": {"zone": 1}})
    assert status == 400 and "label_add.zone" in body["message"]
    status, body = await mgr.call("POST", "/v1/services/s_web/scale", {"replicas": 1e20})
    assert status == 400
    # the manager starts again from what it stored
    await mgr.stop()
    st = SqliteStore(mgr.layout.store)
    assert st.quarantined() == [] and st.by_name(Service, "s_web").spec.container.stop_grace_period == 10.0
    assert all(isinstance(v, str) for n in st.all(Node) for v in n.labels.values())
    st.close()
    await mgr.start()


async def test_a_secret_is_never_echoed_in_an_error(mgr):
    secret = "hunter2-TOPSECRET-value"
    for body in ({"name": "s", "data": secret + "!!"},  # not base64
                 {"name": "s", "data": base64.b64encode(secret.encode()).decode(), "labels": {"a": [secret]}},
                 {"name": "s", "data": base64.b64encode(secret.encode()).decode(), "extra": secret}):
        status, answer = await mgr.call("POST", "/v1/secrets", body)
        assert status == 400
        assert secret not in json.dumps(answer), answer


async def test_long_poll_parameters_are_checked(mgr):
    node_id, ctx = await mgr.join()
    for q in ("wait=nan", "wait=inf", "wait=1e9", "wait=-1", "rev=abc", "wait=x", "ep=" + "x" * 300):
        status, body = await mgr.node_call(ctx, "GET", f"/v1/agent/assignments?{q}")
        assert status == 400, (q, status, body)
    status, _ = await asyncio.wait_for(mgr.node_call(ctx, "GET", "/v1/agent/assignments?wait=0.2&rev=0"), 5)
    assert status == 200


async def test_a_nodes_claims_are_bounded_to_itself(mgr):
    node_id, ctx = await mgr.join()
    beat = {"description": {"hostname": "w1"}, "addr": "not-an-ip",
            "facts": {"engine_subnets": ["0.0.0.0/0", "10.250.0.0/16", "8.8.8.0/24"],
                      "ports_in_use": {"tcp/8080": "held by x", "bogus": "y"}}}
    status, _ = await mgr.node_call(ctx, "POST", "/v1/agent/heartbeat", beat)
    assert status == 200
    st = mgr.server.store
    node = st.get(Node, node_id)
    assert node.addr == "127.0.0.1" and node.state == "ready"  # the claimed address was refused
    from shoal.model.objects import NodeFacts
    facts = st.get(NodeFacts, node_id)
    assert facts.engine_subnets == ["10.250.0.0/16"] and facts.ports_in_use == {"tcp/8080": "held by x"}
    # networks are still made (0.0.0.0/0 was not taken)
    assert (await mgr.call("POST", "/v1/networks", {"name": "net2"}))[0] == 201
    # a port one node holds is not refused for the cluster when another ready node is free of it
    _, other = await mgr.join()
    await mgr.node_call(other, "POST", "/v1/agent/heartbeat", {"description": {"hostname": "w2"}})
    stack = {"name": "p", "services": [{"name": "p_web", "stack": "p", "container": {"image": "busybox"},
                                        "ports": [{"target": 80, "published": 8080}]}]}
    status, body = await mgr.call("POST", "/v1/stacks/p", {"stack": stack})
    assert status == 200 and any("8080/tcp" in m and "w1" in m for m in body["messages"]), body


async def test_one_nodes_bad_report_does_not_fail_the_others(mgr):
    a_id, a = await mgr.join()
    b_id, b = await mgr.join()
    st = mgr.server.store
    await mgr.call("POST", "/v1/networks", {"name": "net"})
    spec = Service(id="svc", spec={**SPEC}).spec
    net = st.by_name(__import__("shoal.model.objects", fromlist=["NetworkObj"]).NetworkObj, "net")
    for tid, node in (("ta", a_id), ("tb", b_id)):
        st.put(Task(id=tid, service_id="svc", service_name="web", slot=1, node_id=node, spec=spec,
                    status=TaskStatus(state="assigned")))
    ip = net.subnet.rsplit(".", 1)[0] + ".7"
    good = {"updates": [{"task_id": "tb", "state": "running", "addresses": {"net": ip}}]}
    bad = {"updates": [{"task_id": "ta", "state": "running", "addresses": {"net": "8.8.8.8", "other": ip}},
                       {"task_id": "tb", "state": "failed"}]}  # not a's task: the whole report refused
    (sa, _), (sb, body_b) = await asyncio.gather(mgr.node_call(a, "POST", "/v1/agent/status", bad),
                                                 mgr.node_call(b, "POST", "/v1/agent/status", good))
    assert sa == 403 and sb == 200 and body_b == {"applied": 1}
    assert st.get(Task, "tb").status.state == "running" and st.get(Task, "tb").status.addresses == {"net": ip}
    assert st.get(Task, "ta").status.state == "assigned"
    # an off-subnet address is dropped, the rest of the update applies
    status, _ = await mgr.node_call(a, "POST", "/v1/agent/status", {"updates": [
        {"task_id": "ta", "state": "running", "addresses": {"net": "8.8.8.8"}}]})
    assert status == 200 and st.get(Task, "ta").status.addresses == {}
    assert st.get(Task, "ta").status.state == "running"


async def test_node_certificates_may_only_do_their_own_nodes_work(mgr):
    node_id, ctx = await mgr.join()
    for path in ("/v1/services", "/v1/secrets", "/v1/nodes"):
        assert (await mgr.node_call(ctx, "GET", path))[0] == 403
    # removed: its certificate is refused from then on
    assert (await mgr.call("POST", f"/v1/nodes/{node_id}/remove", {"force": True}))[0] == 200
    status, body = await mgr.node_call(ctx, "GET", "/v1/agent/assignments?rev=-1")
    assert status == 403 and "removed" in body["message"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(BODY_ROUTES),
       body=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                         max_leaves=12))
def test_fuzzed_bodies_never_get_a_500(fuzz_manager, route, body):
    loop, m = fuzz_manager
    raw = json.dumps(body, allow_nan=True).encode()
    status, answer = loop.run_until_complete(m.call(route[0], route[1], raw=raw))
    assert status < 500, (route, body, status, answer)


@pytest.fixture(scope="module")
def fuzz_manager(tmp_path_factory):
    loop = asyncio.new_event_loop()
    m = Manager(tmp_path_factory.mktemp("fuzz"))
    loop.run_until_complete(m.start())
    yield loop, m
    loop.run_until_complete(m.stop())
    loop.close()


@pytest.mark.parametrize("text", ["10.0.0.1", "0.0.0.0", "255.255.255.255", "010.0.0.1", "1.2.3.04", "10.0.0",
                                  "1.2.3.4.5", "256.1.1.1", "1.2.3.-4", " 1.2.3.4", "1.2.3.4\n", "0x1.2.3.4",
                                  "1..2.3", "\u0661.2.3.4", "1.2.3.4\x00", "1.2.3.\udcff", "::1", ""])
def test_an_agents_address_is_read_as_ipaddress_reads_it(text):
    """The dispatcher reads the addresses agents report with inet_pton (ipaddress's parse was
    1 % of a deploy): the same addresses are taken, the same refused."""
    import ipaddress

    from shoal.manager.dispatcher import _ipv4
    try:
        want = int(ipaddress.IPv4Address(text))
    except ValueError:
        want = None
    assert _ipv4(text) == want
