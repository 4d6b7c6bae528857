"""The overlay's periodic check and an assignment's update never undo each other: a check
that began before an assignment removed a network must not bring its VXLAN device back
(found in CI: a device left on a node after `stack rm`, with nothing left to remove it)."""
from __future__ import annotations

import asyncio
import json

import pytest

from shoal.agent import overlay as ov
from shoal.agent.overlay import Overlay, Segment


class FakeKernel:
    """Just enough of `ip` and `bridge` for Overlay: links that exist, nothing else kept."""

    def __init__(self):
        self.links: dict[str, dict] = {}
        self.calls: list[tuple[str, ...]] = []

    async def run(self, *argv: str, input=None, check: bool = True) -> str:
        self.calls.append(argv)
        await asyncio.sleep(0)  # let the other coroutine in, as a real subprocess does
        await asyncio.sleep(0)
        a = list(argv)
        if a[:4] == ["ip", "-d", "-j", "link"]:
            info = self.links.get(a[5])
            return json.dumps([info]) if info else ""
        if a[:3] == ["ip", "link", "add"]:
            dev = a[3]
            self.links[dev] = {"linkinfo": {"info_data": {"id": int(a[a.index("id") + 1]),
                                                          "local": a[a.index("local") + 1],
                                                          "port": int(a[a.index("dstport") + 1])}},
                               "mtu": 1500, "flags": []}
            return ""
        if a[:3] == ["ip", "link", "set"] and a[3] in self.links:
            if "mtu" in a:
                self.links[a[3]]["mtu"] = int(a[a.index("mtu") + 1])
            if "master" in a:
                self.links[a[3]].update(master=a[a.index("master") + 1], flags=["UP"])
            return ""
        if a[:3] == ["ip", "link", "del"]:
            self.links.pop(a[3], None)
            return ""
        if a[:2] == ["ip", "-j"] or a[:2] == ["bridge", "-j"]:
            return "[]"
        return ""


@pytest.fixture
def kernel(monkeypatch):
    k = FakeKernel()
    monkeypatch.setattr(ov, "_run", k.run)
    return k


SEG = Segment(network="shop_default", bridge="br-0123456789ab", vni=4097, mtu=1450, node_address="",
              prefix=24, peers=(("10.0.1.5", "192.168.50.3"),))


async def _after(yields: int, job):
    for _ in range(yields):
        await asyncio.sleep(0)
    await job


@pytest.mark.parametrize("check_at,removal_at", [(a, b) for a in range(0, 8, 2) for b in range(0, 8, 2)] + [(1, 0), (3, 1)])
async def test_a_check_racing_a_removal_leaves_no_device(kernel, check_at, removal_at):
    """Every interleaving of a check and the assignment that removes the network (before the
    fix, a check that had read the old segments re-created the device in most of them)."""
    o = Overlay("192.168.50.2")
    await o.update([SEG], 4789)
    assert SEG.device in kernel.links
    await asyncio.gather(_after(check_at, o.check()), _after(removal_at, o.update([], 4789)))
    assert SEG.device not in kernel.links
    await o.check()  # and the next check leaves it gone
    assert SEG.device not in kernel.links


async def test_a_check_removes_a_device_no_segment_wants(kernel):
    """Even with no segment at all (the old check skipped that case)."""
    o = Overlay("192.168.50.2")
    await o.update([SEG], 4789)
    o._wanted = []  # as if the removal had been lost
    await o.check()
    assert kernel.links == {}


async def test_a_check_restores_a_device_someone_deleted(kernel):
    o = Overlay("192.168.50.2")
    await o.update([SEG], 4789)
    kernel.links.clear()
    await o.check()
    assert kernel.links[SEG.device]["master"] == SEG.bridge and kernel.links[SEG.device]["mtu"] == 1450
