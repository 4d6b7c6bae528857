"""Routing-mesh throughput: wrk through a published port vs straight to a replica.

Starts 2 nginx replicas (shoal/nginx: event-driven, built offline by
scripts/build-images.sh nginx) on a throw-away Docker bridge network (label
shoal.test=datapath), publishes them with Shoal's datapath (nftables DNAT, no IPVS) and
runs wrk, alternating in the same run, against

* mesh:   http://127.0.0.1:<published>/   (output-hook DNAT + loopback masquerade)
* node:   http://<node address>:<published>/ (output-hook DNAT, source kept)
* direct: http://<replica IP>/            (no Shoal rules on the path)
* direct both: one wrk per replica IP in parallel (half the connections each), summed -
  the fair baseline for a mesh that spreads over 2 replicas

and prints req/s min/median/max per target and the ratio of medians to direct.
Everything is removed at the end. It takes over the node's Shoal datapath (apply /
teardown): do not run it next to a live Shoal agent.

    python3 bench/mesh_throughput.py [--reps 5] [--duration 5] [--connections 32]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from shoal.agent.datapath import kernel  # noqa: E402
from shoal.agent.datapath.ports import check_port_free  # noqa: E402
from shoal.agent.datapath.view import Backend, DatapathView, IngressPort  # noqa: E402

LABEL = "shoal.test=datapath"
NET, BR, SUB, GW = "shbench_mesh", "shbench-br", "10.210.242.0/24", "10.210.242.1"
REPLICAS = {"shbench-web1": "10.210.242.11", "shbench-web2": "10.210.242.12"}
IMAGE = "shoal/nginx:latest"  # serves its hostname at /


def sh(*argv, check=True):
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {p.stderr.strip()}")
    return p


def cleanup():
    for name in REPLICAS:
        sh("docker", "rm", "-f", name, check=False)
    sh("docker", "network", "rm", NET, check=False)
    kernel.teardown()


def node_address():
    for ln in sh("ip", "-4", "-o", "addr", "show", "scope", "global").stdout.splitlines():
        f = ln.split()
        if not f[1].startswith(("docker", "br-", "veth", "shbench")):
            return f[3].split("/")[0]
    return None


def wrk(url, duration, conns, threads):
    p = sh("wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", url)
    m = re.search(r"Requests/sec:\s*([\d.]+)", p.stdout)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", p.stdout)
    if not m:
        raise SystemExit(f"cannot parse wrk output:\n{p.stdout}")
    return float(m.group(1)), (errs.group(0) if errs else "")


def wrk_parallel(urls, duration, conns, threads):
    """One wrk per URL at the same time (conns split evenly); summed req/s."""
    procs = [subprocess.Popen(["wrk", "-t", str(max(1, threads // len(urls))), "-c",
                               str(max(1, conns // len(urls))), "-d", f"{duration}s", u],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for u in urls]
    total, errs = 0.0, []
    for p in procs:
        out, _ = p.communicate()
        m = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if not m:
            raise SystemExit(f"cannot parse wrk output:\n{out}")
        total += float(m.group(1))
        e = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
        if e:
            errs.append(e.group(0))
    return total, "; ".join(errs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    # The datapath is the node's: wait until no Shoal cluster (tests, benchmarks) owns it.
    # (bench/run.py holds it for us and says so in SHOAL_NODE_LOCK_HELD.)
    if not os.environ.get("SHOAL_NODE_LOCK_HELD"):
        import fcntl
        lock = open("/tmp/shoal-node.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)

    port = next(p for p in range(18180, 18400) if check_port_free("tcp", p) is None)
    cleanup()
    try:
        sh("docker", "network", "create", "--label", LABEL, "--subnet", SUB, "--gateway", GW,
           "-o", f"com.docker.network.bridge.name={BR}", NET)
        for name, ip in REPLICAS.items():
            sh("docker", "run", "-d", "--name", name, "--hostname", name,
               "--label", LABEL, "--network", NET, "--ip", ip, IMAGE)
        kernel.apply(DatapathView(
            ingress=[IngressPort(published=port, service="bench",
                                 backends=[Backend(ip=ip, port=80) for ip in REPLICAS.values()])],
            bridges=[BR]))
        first_ip = next(iter(REPLICAS.values()))
        targets = {"mesh 127.0.0.1": f"http://127.0.0.1:{port}/"}
        node = node_address()
        if node:
            targets[f"mesh {node}"] = f"http://{node}:{port}/"
        targets["direct replica"] = f"http://{first_ip}/"
        targets["direct both (2x wrk)"] = [f"http://{ip}/" for ip in REPLICAS.values()]
        for url in targets.values():  # warm-up, and check every path answers
            for u in (url if isinstance(url, list) else [url]):
                sh("timeout", "5", "wget", "-qO-", u)
        results = {k: [] for k in targets}
        notes = {k: set() for k in targets}
        for rep in range(args.reps):
            for name, url in targets.items():
                if isinstance(url, list):
                    rps, err = wrk_parallel(url, args.duration, args.connections, args.threads)
                else:
                    rps, err = wrk(url, args.duration, args.connections, args.threads)
                results[name].append(rps)
                if err:
                    notes[name].add(err)
                print(f"rep {rep + 1}/{args.reps} {name:<22} {rps:10.0f} req/s", flush=True)
        direct = statistics.median(results["direct replica"])
        both = statistics.median(results["direct both (2x wrk)"])
        print()
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.reps} reps, "
              f"2 nginx replicas ({IMAGE})")
        print(f"{'target':<24}{'min':>10}{'median':>10}{'max':>10}{'vs direct':>11}{'vs both':>9}")
        for name, vals in results.items():
            med = statistics.median(vals)
            print(f"{name:<24}{min(vals):10.0f}{med:10.0f}{max(vals):10.0f}{med / direct:10.2f}x{med / both:8.2f}x"
                  + (f"  ({'; '.join(sorted(notes[name]))})" if notes[name] else ""))
    finally:
        cleanup()


if __name__ == "__main__":
    main()
