"""A node's datapath in a network namespace of its own, on a filesystem it shares (the lab's
hosts, nodes in containers): the bridge ports it sets to hairpin mode are its namespace's,
the state it keeps to put things back is its own, and putting things back touches no other
namespace's ports. (Before, ports were found under /sys/class/net, which shows the namespace
/sys was mounted in, and one state file served every namespace: a lab host's daemon turned
off hairpin mode on this machine's ports when it stopped.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shoal.agent.datapath import kernel as ap

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=True)


def hairpin(port: str, ns: str | None = None) -> bool:
    pre = ["ip", "-n", ns] if ns else ["ip"]
    [link] = json.loads(subprocess.run([*pre, "-j", "-d", "link", "show", "dev", port], capture_output=True,
                                       text=True, check=True).stdout)
    return link["linkinfo"]["info_slave_data"]["hairpin"]


def in_ns(ns: str, code: str) -> str:
    """Run `code` with the datapath module in `ns`, as a lab host runs its daemon (nsenter
    --net: the same filesystem, this machine's /sys)."""
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_DATAPATH_STATE"}
    env["PYTHONPATH"] = ROOT
    p = subprocess.run(["nsenter", f"--net=/var/run/netns/{ns}", "--", sys.executable, "-c",
                        "from shoal.agent.datapath import kernel as ap\n" + code],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.fixture
def two_namespaces():
    """Two namespaces, each with a bridge of the same name and one port on it (the same port
    name in both, as two hosts' veths may be)."""
    names = ["shtns-a", "shtns-b"]
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "add", "shtns-br", "type", "bridge")
        sh("ip", "-n", ns, "link", "add", "shtns-p0", "type", "veth", "peer", "name", "shtns-p1")
        sh("ip", "-n", ns, "link", "set", "shtns-p0", "master", "shtns-br")
    try:
        yield names
    finally:
        for ns in names:
            in_ns(ns, "ap.restore_hairpin()")
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_each_namespace_sets_and_puts_back_its_own_ports(two_namespaces):
    a, b = two_namespaces
    state_a = in_ns(a, "print(ap.STATE_FILE)")
    state_b = in_ns(b, "print(ap.STATE_FILE)")
    assert state_a != state_b and str(ap.STATE_FILE) not in (state_a, state_b)

    assert in_ns(a, "print(ap.bridge_ports('shtns-br'))") == "['shtns-p0']"  # its own, not /sys's
    in_ns(a, "ap.ensure_hairpin(['shtns-br'])")
    in_ns(b, "ap.ensure_hairpin(['shtns-br'])")
    assert hairpin("shtns-p0", a) and hairpin("shtns-p0", b)
    assert json.load(open(state_a))["hairpin"] == ["shtns-p0"]

    in_ns(b, "ap.restore_hairpin()")  # b's daemon stops: a's port keeps its hairpin mode
    assert not hairpin("shtns-p0", b) and hairpin("shtns-p0", a)
    assert not os.path.exists(state_b) and os.path.exists(state_a)
    in_ns(a, "ap.restore_hairpin()")
    assert not hairpin("shtns-p0", a) and not os.path.exists(state_a)



def test_a_namespace_made_after_another_is_gone_never_reads_its_state():
    """The kernel gives a new namespace the inode a gone one had (at once, here), so a state
    file named by the inode passed a dead lab host's record to the next one made: it put back
    sysctls and hairpin ports that were never its own (the suite failed on it once). Named by
    the namespace's cookie, each namespace has a file of its own for as long as /run lasts."""
    seen: list[tuple[str, str]] = []
    for _ in range(3):
        subprocess.run(["ip", "netns", "del", "shtns-r"], capture_output=True)
        sh("ip", "netns", "add", "shtns-r")
        try:
            seen.append(tuple(in_ns("shtns-r", "import os\nprint(os.stat('/proc/self/ns/net').st_ino, ap.STATE_FILE)")
                              .split()))
        finally:
            subprocess.run(["ip", "netns", "del", "shtns-r"], capture_output=True)
    files = [f for _, f in seen]
    assert len(set(files)) == len(files), seen
    assert all(inode not in f for inode, f in seen), seen
