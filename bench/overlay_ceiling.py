"""What a VXLAN overlay can reach in this lab at best, hop by hop, without Docker or Shoal.

    python3 bench/overlay_ceiling.py [--rounds 5] [--seconds 5] [--no-record]

bench/overlay.py measures Shoal's overlay (and Swarm's) against the underlay between two lab
hosts. This one asks how much of the gap belongs to any overlay on this machine: it builds
the same shape out of bare kernel parts, two "hosts" (network namespaces on one bridge, as
scripts/lab.sh makes them) and a "container" namespace behind each, then measures one TCP
stream (iperf3) over each rung of a ladder, the underlay measured again in every round as
the reference:

- underlay: host to host over their veths and the lab bridge (the issue's reference);
- vxlan: the hosts' VXLAN devices to each other (encapsulation only: no bridge, no rules);
- vxlan+bridge: container to container, each behind a bridge holding the VXLAN device and
  the container's veth (the shape of Shoal's and Swarm's overlays), no firewall;
- +conntrack: the same with a stateful ruleset (established/related accept, a nat chain) in
  both hosts, as Docker's own rules make every node have;
- +br_netfilter: and bridged packets passed to those hooks (`bridge-nf-call-iptables=1`, which
  Docker sets in the namespace its engine runs in);
- +notrack: and VXLAN's own UDP packets (port 4789) exempted from conntrack in both hosts'
  raw hooks (the inner packets are still tracked);
- routed: no encapsulation at all: each container behind a veth with /32 routes, the hosts
  forwarding over the underlay (the shape of flannel's host-gw or Calico without
  encapsulation, which needs the nodes on one L2 segment), no firewall;
- routed+conntrack: the same with the stateful ruleset.

Namespaces are named `shc-*` and removed at the end (also on an error or Ctrl-C). Takes the
lab's lock (/tmp/shoal-lab.lock) so that no lab test shares the CPUs with it.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
LAB_LOCK = "/tmp/shoal-lab.lock"
PORT = 5299
HOSTS = ("shc-h1", "shc-h2")
CONTAINERS = ("shc-c1", "shc-c2")   # behind the VXLAN bridge
ROUTED = ("shc-r1", "shc-r2")       # behind a routed veth
WIRE = "shc-wire"                   # holds the lab bridge
NAMESPACES = (WIRE, *HOSTS, *CONTAINERS, *ROUTED)
UNDERLAY = ("10.231.0.1", "10.231.0.2")
VXLAN_BARE = ("10.232.0.1", "10.232.0.2")
OVERLAY = ("10.233.0.1", "10.233.0.2")
ROUTED_ADDR = ("10.234.0.1", "10.234.0.2")
BNF = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
       "net.bridge.bridge-nf-call-arptables")

CONNTRACK_RULES = """table inet shc {
  chain forward_rules {
    type filter hook forward priority 0;
    ct state established,related accept
    accept
  }
  chain input_rules {
    type filter hook input priority 0;
    ct state established,related accept
    accept
  }
  chain nat_pre {
    type nat hook prerouting priority -100;
  }
  chain nat_post {
    type nat hook postrouting priority 100;
  }
}
"""

NOTRACK_RULES = """table inet shcraw {
  chain raw_pre {
    type filter hook prerouting priority -300;
    udp dport 4789 notrack
  }
  chain raw_out {
    type filter hook output priority -300;
    udp dport 4789 notrack
  }
}
"""

# rung -> (client namespace, server address, conntrack rules on, br_netfilter on, VXLAN notrack)
RUNGS = {
    "underlay": (HOSTS[0], UNDERLAY[1], False, False, False),
    "vxlan": (HOSTS[0], VXLAN_BARE[1], False, False, False),
    "vxlan+bridge": (CONTAINERS[0], OVERLAY[1], False, False, False),
    "vxlan+bridge+conntrack": (CONTAINERS[0], OVERLAY[1], True, False, False),
    "vxlan+bridge+conntrack+br_netfilter": (CONTAINERS[0], OVERLAY[1], True, True, False),
    "vxlan+bridge+conntrack+br_netfilter+notrack": (CONTAINERS[0], OVERLAY[1], True, True, True),
    "routed": (ROUTED[0], ROUTED_ADDR[1], False, False, False),
    "routed+conntrack": (ROUTED[0], ROUTED_ADDR[1], True, False, False),
}


def sh(*args: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ip(ns: str, *args: str) -> None:
    sh("ip", "-n", ns, *args)


def in_ns(ns: str, *args: str, check: bool = True, stdin: str | None = None) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check, stdin=stdin)


def bridge_netfilter(ns: str, on: bool) -> None:
    in_ns(ns, "sysctl", "-qw", *(f"{key}={int(on)}" for key in BNF))


def veth_into(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair with one end in each namespace (made in the root namespace, then moved and
    renamed: a peer named eth0 cannot be made while the root namespace has one)."""
    tmp_a, tmp_b = f"shx{os.getpid() % 10000}a", f"shx{os.getpid() % 10000}b"
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    sh("ip", "link", "set", tmp_a, "netns", ns_a)
    ip(ns_a, "link", "set", tmp_a, "name", name_a)
    sh("ip", "link", "set", tmp_b, "netns", ns_b)
    ip(ns_b, "link", "set", tmp_b, "name", name_b)


def teardown() -> None:
    for ns in NAMESPACES:
        sh("ip", "netns", "del", ns, check=False)


def build() -> None:
    teardown()
    for ns in NAMESPACES:
        sh("ip", "netns", "add", ns)
        ip(ns, "link", "set", "lo", "up")
    ip(WIRE, "link", "add", "lab0", "type", "bridge")
    ip(WIRE, "link", "set", "lab0", "up")
    bridge_netfilter(WIRE, False)
    for k, host in enumerate(HOSTS):
        other = 1 - k
        veth_into(WIRE, f"port{k}", host, "eth0")
        ip(WIRE, "link", "set", f"port{k}", "master", "lab0", "up")
        ip(host, "addr", "add", f"{UNDERLAY[k]}/24", "dev", "eth0")
        ip(host, "link", "set", "eth0", "up")
        bridge_netfilter(host, False)
        common = ("local", UNDERLAY[k], "remote", UNDERLAY[other], "dstport", "4789", "dev", "eth0")
        # encapsulation only
        ip(host, "link", "add", "vxbare", "type", "vxlan", "id", "4241", *common)
        ip(host, "addr", "add", f"{VXLAN_BARE[k]}/24", "dev", "vxbare")
        ip(host, "link", "set", "vxbare", "mtu", "1450", "up")
        # the overlay's shape: bridge + VXLAN device + the container's veth
        ip(host, "link", "add", "ov0", "type", "bridge")
        ip(host, "link", "set", "ov0", "up")
        ip(host, "link", "add", "vxov", "type", "vxlan", "id", "4242", *common)
        ip(host, "link", "set", "vxov", "master", "ov0", "mtu", "1450", "up")
        veth_into(host, "vc", CONTAINERS[k], "eth0")
        ip(host, "link", "set", "vc", "master", "ov0", "mtu", "1450", "up")
        ip(CONTAINERS[k], "addr", "add", f"{OVERLAY[k]}/24", "dev", "eth0")
        ip(CONTAINERS[k], "link", "set", "eth0", "mtu", "1450", "up")
        # routed: /32 routes, the host forwards over the underlay
        veth_into(host, "vr", ROUTED[k], "eth0")
        ip(host, "link", "set", "vr", "up")
        ip(host, "addr", "add", "169.254.1.1/32", "dev", "vr")
        ip(ROUTED[k], "addr", "add", f"{ROUTED_ADDR[k]}/32", "dev", "eth0")
        ip(ROUTED[k], "link", "set", "eth0", "up")
        ip(ROUTED[k], "route", "add", "169.254.1.1", "dev", "eth0")
        ip(ROUTED[k], "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        ip(host, "route", "add", f"{ROUTED_ADDR[k]}/32", "dev", "vr")
        ip(host, "route", "add", f"{ROUTED_ADDR[other]}/32", "via", UNDERLAY[other], "dev", "eth0")
        in_ns(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for ns in (HOSTS[1], CONTAINERS[1], ROUTED[1]):
        in_ns(ns, "iperf3", "-s", "-D", "-p", str(PORT))
    time.sleep(1)


def set_rung(conntrack: bool, br_nf: bool, notrack: bool = False) -> None:
    for host in HOSTS:
        in_ns(host, "nft", "delete", "table", "inet", "shc", check=False)
        in_ns(host, "nft", "delete", "table", "inet", "shcraw", check=False)
        if conntrack:
            in_ns(host, "nft", "-f", "-", stdin=CONNTRACK_RULES)
        if notrack:
            in_ns(host, "nft", "-f", "-", stdin=NOTRACK_RULES)
        bridge_netfilter(host, br_nf)


def stream(client: str, server: str, seconds: int) -> float:
    """One TCP stream's throughput in MB/s (as the receiver counted it)."""
    out = in_ns(client, "iperf3", "-c", server, "-p", str(PORT), "-t", str(seconds), "-J")
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8 / 1e6


def measure(rounds: int, seconds: int, rungs: list[str]) -> dict[str, list[tuple[float, float]]]:
    """rung -> [(MB/s, share of that round's underlay)]."""
    got: dict[str, list[tuple[float, float]]] = {r: [] for r in rungs}
    for n in range(1, rounds + 1):
        base = 0.0
        line = []
        for rung in rungs:
            client, server, conntrack, br_nf, notrack = RUNGS[rung]
            set_rung(conntrack, br_nf, notrack)
            mbs = stream(client, server, seconds)
            if rung == "underlay":
                base = mbs
            got[rung].append((mbs, mbs / base))
            line.append(f"{rung} {mbs:,.0f} ({100 * mbs / base:.0f} %)")
        print(f"round {n}: " + ", ".join(line), flush=True)
    set_rung(False, False)
    return got


def table(got: dict[str, list[tuple[float, float]]]) -> str:
    rows = ["| rung | MB/s min / median / max | share of the underlay min / median / max |",
            "|---|---|---|"]
    for rung, values in got.items():
        mbs = sorted(v for v, _ in values)
        share = sorted(s for _, s in values)
        rows.append(f"| {rung} | {mbs[0]:,.0f} / {statistics.median(mbs):,.0f} / {mbs[-1]:,.0f} | "
                    f"{100 * share[0]:.0f} / {100 * statistics.median(share):.0f} / {100 * share[-1]:.0f} % |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rungs", default=",".join(RUNGS),
                        help="comma-separated, from: " + ", ".join(RUNGS) + " (underlay is always first)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rungs = ["underlay"] + [r for r in args.rungs.split(",") if r and r != "underlay"]
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown:
        parser.error(f"unknown rung(s): {', '.join(unknown)}")
    lock = open(LAB_LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    try:
        build()
        got = measure(args.rounds, args.seconds, rungs)
    finally:
        sh("pkill", "-f", f"iperf3 -s -D -p {PORT}", check=False)
        teardown()
        lock.close()
    text = table(got)
    print(text)
    if not args.no_record:
        command = "python3 bench/overlay_ceiling.py " + " ".join(sys.argv[1:])
        with open(RESULTS, "a") as f:
            f.write(f"\n## Overlay ceiling: VXLAN and the hops around it, bare kernel parts — {started}\n\n"
                    f"`{command.strip()}` ({os.cpu_count()}-core machine, kernel {platform.release()}, "
                    f"load average {load:.2f} at start; one TCP stream, iperf3, {args.seconds} s a "
                    f"measure, {args.rounds} rounds, the underlay measured first in each round)\n\n"
                    f"{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
