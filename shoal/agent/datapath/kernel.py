"""Putting a rendered datapath into the kernel, and taking it out again (IO).

* ``nft -f -`` with :func:`render_ruleset`'s script (one atomic transaction);
* sysctls: ``net.ipv4.conf.all.route_localnet=1`` (127.0.0.1:<published> is DNATed to a
  bridge), ``net.bridge.bridge-nf-call-iptables=1`` (replies bridged straight back from a
  replica to a client on the same bridge must see conntrack to be un-DNATed),
  ``net.ipv4.ip_forward=1``. Values Shoal changed are saved in :data:`STATE_FILE` and put
  back by :func:`teardown`;
* one rule in Docker's ``DOCKER-USER`` chain, tagged ``-m comment --comment shoal``, that
  accepts connections carrying :data:`INGRESS_CT_MARK` (set by Shoal's DNAT of published
  ports) - Docker's FORWARD policy is DROP and only Docker itself may accept there.

Every function is idempotent; :func:`teardown` is safe to call when nothing is installed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import socket
import struct
import subprocess
from pathlib import Path
from typing import Optional

from shoal.agent.datapath.render import INGRESS_CT_MARK, TABLE_FAMILY, TABLE_NAME, render_ruleset
from shoal.agent.datapath.view import DatapathView

log = logging.getLogger(__name__)


SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)  # Linux >= 5.14 (Python names it from 3.13)


def _netns_id() -> str:
    """This process's network namespace: the kernel state Shoal changes (sysctls, bridge
    ports, rules) is per network namespace, and several nodes may share one filesystem, each in
    a namespace of its own (nodes in containers, the lab). Its cookie, which the kernel never
    gives another namespace until the machine restarts (as long as /run lasts); not the inode
    of its handle, which a new namespace takes again once the old one is gone: a lab host made
    after another inherited a dead host's file, and put back what it said (found by the suite,
    test_datapath_netns). The inode only where the kernel has no cookie."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return "c" + str(struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0])
    except OSError:  # pragma: no cover - kernels before 5.14
        pass
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:  # pragma: no cover - no procfs
        return "0"


# What Shoal changed in this network namespace's kernel state, to put back at teardown: one
# file per namespace (a node in another namespace must never restore, or remove, this one's).
STATE_FILE = Path(os.environ.get("SHOAL_DATAPATH_STATE", f"/run/shoal/datapath-state-net{_netns_id()}.json"))
DOCKER_USER = "DOCKER-USER"
RULE_COMMENT = "shoal"

SYSCTLS: dict[str, str] = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.route_localnet": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
}


class DatapathError(RuntimeError):
    pass


def _run(argv: list[str], *, input: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise DatapathError(f"{shlex.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str) -> Optional[str]:
    try:
        return _sysctl_path(key).read_text().strip()
    except OSError:
        return None


def _write_sysctl(key: str, value: str) -> None:
    _sysctl_path(key).write_text(value + "\n")


def _load_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _save_state(state: dict) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(STATE_FILE)


def ensure_sysctls() -> None:
    """Set :data:`SYSCTLS`, remembering the values found before Shoal changed them."""
    if read_sysctl("net.bridge.bridge-nf-call-iptables") is None:
        _run(["modprobe", "br_netfilter"], check=False)
    state = _load_state()
    saved: dict = state.setdefault("sysctls", {})
    changed = False
    for key, want in SYSCTLS.items():
        cur = read_sysctl(key)
        if cur is None:
            raise DatapathError(f"sysctl {key} does not exist on this kernel")
        if cur != want:
            if key not in saved:
                saved[key] = cur
                changed = True
            _write_sysctl(key, want)
    if changed:
        _save_state(state)


def restore_sysctls() -> None:
    """Put back the values :func:`ensure_sysctls` changed, unless somebody changed them
    again since. (With a Docker Engine running, ip_forward and bridge-nf-call-iptables
    were already 1, so only route_localnet is normally restored.)"""
    state = _load_state()
    for key, old in state.get("sysctls", {}).items():
        if read_sysctl(key) == SYSCTLS.get(key):
            try:
                _write_sysctl(key, old)
            except OSError as e:  # pragma: no cover - best effort
                log.warning("cannot restore %s=%s: %s", key, old, e)
    state.pop("sysctls", None)
    if state:
        _save_state(state)
    else:
        try:
            STATE_FILE.unlink()
        except FileNotFoundError:
            pass


# --- Docker's DOCKER-USER chain -------------------------------------------------------

def _docker_user_rule() -> list[str]:
    mark = f"{INGRESS_CT_MARK:#x}/{INGRESS_CT_MARK:#x}"
    return ["-m", "connmark", "--mark", mark, "-m", "comment", "--comment", RULE_COMMENT,
            "-j", "ACCEPT"]


def docker_user_exists() -> bool:
    return _run(["iptables", "-w", "-S", DOCKER_USER], check=False).returncode == 0


def shoal_docker_user_rules() -> list[str]:
    """Shoal's rules in DOCKER-USER, as ``iptables -S`` prints them."""
    p = _run(["iptables", "-w", "-S", DOCKER_USER], check=False)
    if p.returncode != 0:
        return []
    return [ln for ln in p.stdout.splitlines()
            if ln.startswith("-A ") and f"--comment {RULE_COMMENT}" in ln
            and f"--comment {RULE_COMMENT}-" not in ln]


def ensure_docker_user_rule() -> bool:
    """Make sure Shoal's accept rule is the first rule of DOCKER-USER. Returns False when
    there is no DOCKER-USER chain (no Docker Engine: nothing drops forwarded traffic)."""
    if not docker_user_exists():
        log.info("no %s chain: Docker's FORWARD filter not present", DOCKER_USER)
        return False
    rule = _docker_user_rule()
    p = _run(["iptables", "-w", "-S", DOCKER_USER])
    first = [ln for ln in p.stdout.splitlines() if ln.startswith("-A ")][:1]
    mine = shoal_docker_user_rules()
    if first and first == mine[:1] and len(mine) == 1:
        return True
    remove_docker_user_rules()
    _run(["iptables", "-w", "-I", DOCKER_USER, "1", *rule])
    return True


def remove_docker_user_rules() -> int:
    n = 0
    for ln in shoal_docker_user_rules():
        argv = shlex.split(ln)
        argv[0] = "-D"
        _run(["iptables", "-w", *argv], check=False)
        n += 1
    return n


# --- bridge ports: hairpin mode ---------------------------------------------------------

def _links(*selector: str) -> list[dict]:
    """Links as `ip -j -d link show SELECTOR` describes them. Asked over netlink, which answers
    for this process's network namespace; /sys/class/net shows the namespace /sys was mounted
    in, which a process that entered another namespace (nsenter --net) still sees."""
    p = _run(["ip", "-j", "-d", "link", "show", *selector], check=False)
    if p.returncode != 0:
        return []  # (no such bridge, any more)
    try:
        links = json.loads(p.stdout or "[]")
    except ValueError:
        return []
    return [link for link in links if isinstance(link, dict) and link.get("ifname")]


def bridge_ports(bridge: str) -> list[str]:
    return sorted(link["ifname"] for link in _links("master", bridge))


def _hairpin_on(link: dict) -> bool:
    return bool((link.get("linkinfo") or {}).get("info_slave_data", {}).get("hairpin"))


def _set_hairpin(port: str, on: bool) -> bool:
    p = _run(["ip", "link", "set", "dev", port, "type", "bridge_slave", "hairpin", "on" if on else "off"],
             check=False)
    if p.returncode != 0:
        log.debug("hairpin %s on %s: %s", "on" if on else "off", port, p.stderr.strip())
    return p.returncode == 0


def ensure_hairpin(bridges: list[str]) -> None:
    """Turn on hairpin mode on every port of ``bridges`` (Docker only does so when the
    daemon runs with userland-proxy=false). Without it the bridge never sends a frame
    back out of the port it came from, so a replica whose connection to its own VIP is
    DNATed back to itself gets no answer. Ports Shoal switched on are remembered."""
    state = _load_state()
    mine = set(state.get("hairpin", []))
    before = set(mine)
    wanted = set(bridges)
    links = _links("type", "bridge_slave") if wanted else []  # every bridge's ports, one question
    for link in links:
        port = link["ifname"]
        # (shv…: the overlay's VXLAN port: a frame from another node never goes back there)
        if link.get("master") not in wanted or port.startswith("shv") or _hairpin_on(link):
            continue
        if _set_hairpin(port, True):
            mine.add(port)
        else:
            log.warning("cannot set hairpin mode on %s", port)
    if wanted:
        mine &= {link["ifname"] for link in links}  # (those gone with their containers are forgotten)
    if mine != before:
        state["hairpin"] = sorted(mine)
        _save_state(state)


def restore_hairpin() -> None:
    state = _load_state()
    for port in state.pop("hairpin", []):
        _set_hairpin(port, False)  # (fails when the container, and its veth, is gone)
    if state:
        _save_state(state)
    else:
        try:
            STATE_FILE.unlink()
        except FileNotFoundError:
            pass


# --- nftables --------------------------------------------------------------------------

def load_ruleset(script: str) -> None:
    _run(["nft", "-f", "-"], input=script)


def table_exists() -> bool:
    return _run(["nft", "list", "table", TABLE_FAMILY, TABLE_NAME], check=False).returncode == 0


def delete_table() -> None:
    if table_exists():
        _run(["nft", "delete", "table", TABLE_FAMILY, TABLE_NAME])


# --- the API ---------------------------------------------------------------------------

def apply(view: DatapathView) -> str:
    """Make the kernel implement ``view``; returns the script that was loaded."""
    script = render_ruleset(view)  # raises ValueError before touching anything
    ensure_sysctls()
    ensure_hairpin(sorted(set(view.bridges) | {v.bridge for v in view.vips}))
    load_ruleset(script)
    ensure_docker_user_rule()
    return script


def teardown() -> None:
    """Remove everything :func:`apply` added: the table, the DOCKER-USER rule, and the
    sysctl values Shoal changed."""
    remove_docker_user_rules()
    delete_table()
    restore_hairpin()
    restore_sysctls()


async def apply_async(view: DatapathView) -> str:
    return await asyncio.to_thread(apply, view)


async def teardown_async() -> None:
    await asyncio.to_thread(teardown)
