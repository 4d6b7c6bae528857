"""Assignment answers as `Content-Encoding: deflate`: the logs' chunks compressed once and
shared by every node's answer, the node's own part stored; any zlib (and aiohttp's client)
decodes the result."""
from __future__ import annotations

import base64
import json
import os
import random
import zlib

import aiohttp

from shoal import pki
from shoal.manager.cluster import Cluster
from shoal.manager.deflated import adler32_combine, compressed, stored, zlib_stream
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.keyring import Keyring
from shoal.model.objects import Node, NodeDescription, Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, FileObjectSpec, FileRef, NetworkAttachment, ServiceSpec, StackSpec
from shoal.store.sqlite import SqliteStore as Store

from manager_inproc import mgr  # noqa: F401 - the fixture


def test_adler32_of_a_concatenation_from_its_parts():
    rnd = random.Random(7)
    for _ in range(300):
        a, b = rnd.randbytes(rnd.randint(0, 5000)), rnd.randbytes(rnd.randint(0, 70000))
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)
    big = b"\xff" * 300_000  # sums past the modulus many times over
    assert adler32_combine(zlib.adler32(big), zlib.adler32(big), len(big)) == zlib.adler32(big + big)


def test_a_stream_of_shared_pieces_and_own_bytes_decodes_to_their_concatenation():
    shared = b'[1,2,"10.210.0.5"],' * 4000
    piece = compressed(shared)
    secret = os.urandom(64)
    items = [b'{"own":"', secret.hex().encode(), b'",', piece, b"", stored(b"x"), b"tail", piece, compressed(b"")]
    whole = b'{"own":"' + secret.hex().encode() + b'",' + shared + b"x" + b"tail" + shared
    body = b"".join(zlib_stream(items))
    assert zlib.decompress(body) == whole  # header, blocks, final block and Adler-32 all right
    assert len(body) < len(whole) / 10
    # the own bytes are stored: they travel as they are (never compressed beside others')
    assert secret.hex().encode() in body
    assert zlib.decompress(b"".join(zlib_stream([]))) == b""


def test_stored_bytes_of_any_length_decode_across_block_limits():
    shared = compressed(b'[7,8,"10.210.0.9"],' * 100)
    for n in (0, 1, 65_534, 65_535, 65_536, 200_000):  # a stored block holds at most 65,535 bytes
        own = os.urandom(n)
        assert zlib.decompress(b"".join(zlib_stream([own, shared, own[:10]]))) == \
            own + b'[7,8,"10.210.0.9"],' * 100 + own[:10]
        assert zlib.decompress(b"".join(zlib_stream([stored(own)]))) == own


# ------------------------------------------------------------------------------ dispatcher
def _dispatcher(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    kr = Keyring(str(tmp_path / "key"))
    kr.create(False)
    cl = Cluster(store, kr, "mgr")
    return Dispatcher(store, cl), cl, store


def _replicas(store, n: int, per_node: int = 50, prefix: str = "n") -> None:
    spec = ServiceSpec(name="app_web", stack="app", container=ContainerSpec(image="busybox"), replicas=n,
                       networks=[NetworkAttachment(network="app_default")])
    svc = store.put(Service(id="svc1", spec=spec, virtual_ips={"app_default": "10.211.0.2"}))
    for i in range(n):
        store.put(Task(id=f"t{i}", service_id=svc.id, service_name=spec.name, slot=i + 1, node_id=f"{prefix}{i // per_node}",
                       spec=spec, status=TaskStatus(state="running", addresses={"app_default": f"10.210.{i // 250}.{i % 250 + 2}"})))


def test_deflated_answers_equal_plain_ones_and_share_the_logs_compressed_chunks(tmp_path):
    d, _cl, store = _dispatcher(tmp_path)
    for n in ("n0", "n1"):
        store.put(Node(id=n, state="ready", description=NodeDescription(hostname=n)))
    _replicas(store, 2000, prefix="m")  # on other nodes: n0 and n1 get their endpoint events
    plain, deflated = d.answer_parts("n0", d.view("n0"))
    assert not deflated
    body, deflated = d.answer_parts("n0", d.view("n0"), deflate=True)
    assert deflated and json.loads(zlib.decompress(b"".join(body))) == json.loads(b"".join(plain))
    assert sum(map(len, body)) < sum(map(len, plain)) / 3
    before = len(d.log.pieces)
    other, _ = d.answer_parts("n1", d.view("n1"), deflate=True)
    assert len(d.log.pieces) == before  # n1's answer reused the chunks n0's compressed
    shared = {bytes(p) for p in body} & {bytes(p) for p in other}
    assert max(map(len, shared)) > 5_000  # the endpoint table's bytes, the same object in both
    # a small answer goes plain whatever the agent accepts
    d2, _, store2 = _dispatcher(tmp_path / "small")
    store2.put(Node(id="n0", state="ready", description=NodeDescription(hostname="n0")))
    assert d2.answer_parts("n0", d2.view("n0"), deflate=True)[1] is False


def test_a_nodes_secrets_travel_stored_never_compressed(tmp_path):
    d, cl, store = _dispatcher(tmp_path)
    store.put(Node(id="n0", state="ready", description=NodeDescription(hostname="n0")))
    secret = os.urandom(48)
    spec = ServiceSpec(name="s_app", stack="s", replicas=1, container=ContainerSpec(
        image="busybox", secrets=[FileRef(source="s_sec", target="/run/secrets/sec")]))
    cl.deploy_stack(StackSpec(name="s", services=[spec], secrets=[FileObjectSpec(name="s_sec", stack="s", data=secret)]))
    svc = store.by_name(Service, "s_app")
    store.put(Task(id="tsec", service_id=svc.id, service_name="s_app", slot=1, node_id="n0", spec=svc.spec,
                   status=TaskStatus(state="assigned")))
    _replicas(store, 1000, prefix="m")  # on other nodes: endpoint events only
    body, deflated = d.answer_parts("n0", d.view("n0"), deflate=True)
    raw = b"".join(body)
    assert deflated and base64.b64encode(secret) in raw  # stored: not compressed beside anything
    answer = json.loads(zlib.decompress(raw))
    assert [base64.b64decode(v) for v in answer["secrets"]["s_sec"].values()] == [secret]
    assert len(raw) < len(zlib.decompress(raw)) / 2  # the endpoint events are compressed all the same


async def test_an_agent_gets_a_deflated_answer_over_tls_and_others_a_plain_one(mgr):  # noqa: F811
    node_id, ctx = await mgr.join()
    store = mgr.server.store
    for i in range(30):  # the replicas' nodes, ready (else the orchestrator would replace them)
        store.put(Node(id=f"n{i}", state="ready", description=NodeDescription(hostname=f"n{i}")))
    _replicas(store, 1500)
    # the logs caught up with those writes now (the dispatcher's loop would, a moment later:
    # on a busy machine the first answer could otherwise miss peer events the next one has)
    mgr.server.components.dispatcher.sync()
    url = f"https://127.0.0.1:{mgr.port}/v1/agent/assignments?rev=-1"
    got = {}
    for accept in ("gzip, deflate", "identity", "deflate;q=0"):
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.get(url, ssl=ctx, server_hostname=pki.MANAGER_NAME,
                             headers={"Accept-Encoding": accept}) as r:
                assert r.status == 200
                raw = await r.read()
                got[accept] = (r.headers.get("Content-Encoding"), len(raw),
                               json.loads(zlib.decompress(raw) if r.headers.get("Content-Encoding") else raw))
    assert got["gzip, deflate"][0] == "deflate", {k: (v[0], v[1]) for k, v in got.items()}  # (encoding, size)
    assert got["identity"][0] is None and got["deflate;q=0"][0] is None
    assert got["gzip, deflate"][1] < got["identity"][1] / 3
    strip = lambda a: {k: v for k, v in a.items() if k != "rev"}  # noqa: E731
    assert strip(got["gzip, deflate"][2]) == strip(got["identity"][2])
    assert len(got["identity"][2]["endpoints"]["events"]) > 1500
    # aiohttp's client (the agent's) asks for it and decodes it by itself
    status, answer = await mgr.node_call(ctx, "GET", "/v1/agent/assignments?rev=-1")
    assert status == 200 and strip(answer) == strip(got["identity"][2])
