"""The overlay on this node: a VXLAN device on each network's bridge, and its peers, from the manager.

Each Shoal network is one subnet across the cluster. On every node that holds it, the
network's bridge (made by the engine) gets a VXLAN port (`shv<vni>`, no learning, ARP
proxy) and this node's own address on the network (on the bridge, whose MAC becomes the
one that address implies). For every endpoint on another node the manager lists, the
device gets a permanent forwarding entry (its MAC -> that node's address) and a permanent
neighbour entry (its IP -> its MAC), so the device answers ARP for it locally and sends
its frames to the right node: no multicast, no flooding, no learning. A MAC is derived
from the IP (02:42 + the four bytes, as the engine does), so the manager need not send it.

`desired_*` functions are pure; `Overlay` applies their difference with what the kernel
has (read back each time it is asked to converge), so a node that restarts, joins late or
comes back after a partition ends up with exactly the entries the manager lists.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger("shoal.agent.overlay")

PREFIX = "shv"
DEFAULT_MTU = 1450  # an underlay of 1500 minus VXLAN's 50 bytes (as Docker's overlay)
MTU_OPT = "com.docker.network.driver.mtu"


def device_name(vni: int) -> str:
    return f"{PREFIX}{vni:x}"


def mac_of(ip: str) -> str:
    """The MAC an endpoint with this IPv4 address has (the engine's rule, which Shoal also asks for)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def network_mtu(driver_opts: dict[str, str]) -> int:
    try:
        return int(driver_opts.get(MTU_OPT, DEFAULT_MTU))
    except ValueError:
        return DEFAULT_MTU


@dataclass(frozen=True)
class Segment:
    """One network's overlay on this node."""
    network: str
    bridge: str
    vni: int
    mtu: int
    node_address: str  # this node's own address on the network ("" until the manager gave one)
    prefix: int  # the subnet's prefix length
    peers: tuple[tuple[str, str], ...]  # (endpoint IP, its node's underlay address), sorted

    @property
    def device(self) -> str:
        return device_name(self.vni)


def fdb_commands(device: str, have: dict[str, str], want: dict[str, str]) -> list[str]:
    """`bridge -batch` lines turning the device's forwarding entries `have` into `want` (MAC -> node)."""
    out = [f"fdb del {mac} dev {device} dst {dst} self" for mac, dst in sorted(have.items()) if want.get(mac) != dst]
    out += [f"fdb replace {mac} dev {device} dst {dst} self permanent"
            for mac, dst in sorted(want.items()) if have.get(mac) != dst]
    return out


def neigh_commands(device: str, have: dict[str, str], want: dict[str, str]) -> list[str]:
    """`ip -batch` lines turning the device's neighbour entries `have` into `want` (IP -> MAC)."""
    out = [f"neigh del {ip} dev {device}" for ip in sorted(have) if ip not in want]
    out += [f"neigh replace {ip} lladdr {mac} dev {device} nud permanent"
            for ip, mac in sorted(want.items()) if have.get(ip) != mac]
    return out


def desired(seg: Segment) -> tuple[dict[str, str], dict[str, str]]:
    """(forwarding MAC -> node address, neighbour IP -> MAC) for a segment's peers."""
    fdb, neigh = {}, {}
    for ip, node in seg.peers:
        mac = mac_of(ip)
        fdb[mac] = node
        neigh[ip] = mac
    return fdb, neigh


async def _run(*argv: str, input: Optional[str] = None, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(input.encode() if input is not None else None)
    if check and proc.returncode != 0:
        raise OverlayError(f"{' '.join(argv[:4])}…: {err.decode().strip() or out.decode().strip()}")
    return out.decode()


class OverlayError(Exception):
    pass


class Overlay:
    """Keeps this node's VXLAN devices and their entries as the manager's peer lists say."""

    def __init__(self, local_addr: str, state_file: Optional[str] = None):
        self.local = local_addr
        self.port = 4789
        self.state_file = state_file
        self._applied: dict[str, Segment] = {}  # network -> the segment last made so
        self.errors: dict[str, str] = {}  # network -> why its overlay is not up
        self._devices: set[str] = self._load_devices()  # devices this node made (to remove unneeded ones)
        # One change at a time, always towards the latest segments: a periodic check that
        # started from an older list must not re-create a device an assignment just removed.
        self._lock = asyncio.Lock()
        self._wanted: list[Segment] = []

    @property
    def enabled(self) -> bool:
        try:
            return bool(self.local) and not ipaddress.ip_address(self.local).is_loopback
        except ValueError:
            return False

    def _load_devices(self) -> set[str]:
        if not self.state_file:
            return set()
        try:
            with open(self.state_file) as f:
                return set(json.load(f).get("devices", []))
        except (OSError, ValueError):
            return set()

    def _save_devices(self) -> None:
        if not self.state_file:
            return
        tmp = self.state_file + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"devices": sorted(self._devices)}, f)
            os.replace(tmp, self.state_file)
        except OSError as e:
            log.warning("could not record the overlay's devices: %s", e)

    def is_up(self, network: str) -> bool:
        return network in self._applied

    async def check(self) -> None:
        """Read the kernel back and converge to the latest segments again: entries someone
        removed come back, devices no segment wants go (the periodic check)."""
        async with self._lock:
            self._applied.clear()
            await self._update(self._wanted, self.port)

    async def update(self, segments: list[Segment], port: int) -> None:
        async with self._lock:
            self._wanted = list(segments)
            await self._update(segments, port)

    async def _update(self, segments: list[Segment], port: int) -> None:
        if not self.enabled:
            return
        if port != self.port:
            self.port = port
            self._applied.clear()
        wanted = {s.device for s in segments}
        for seg in segments:
            if self._applied.get(seg.network) == seg:
                continue
            try:
                await self._converge(seg)
                self._applied[seg.network] = seg
                self.errors.pop(seg.network, None)
            except OverlayError as e:
                self._applied.pop(seg.network, None)
                if self.errors.get(seg.network) != str(e):
                    log.error("overlay of network %s: %s", seg.network, e)
                self.errors[seg.network] = str(e)
        for net in [n for n, s in self._applied.items() if s.device not in wanted]:
            del self._applied[net]
        for dev in sorted(self._devices - wanted):
            await _run("ip", "link", "del", dev, check=False)
            self._devices.discard(dev)
            self._save_devices()

    async def _converge(self, seg: Segment) -> None:
        dev = seg.device
        if dev not in self._devices:
            self._devices.add(dev)
            self._save_devices()
        await self._ensure_device(seg)
        if seg.node_address:
            await self._ensure_node_address(seg)
        fdb_want, neigh_want = desired(seg)
        fdb_have, neigh_have = await self._read_entries(dev)
        cmds = fdb_commands(dev, fdb_have, fdb_want)
        if cmds:
            await _run("bridge", "-force", "-batch", "-", input="\n".join(cmds) + "\n")
        cmds = neigh_commands(dev, neigh_have, neigh_want)
        if cmds:
            await _run("ip", "-force", "-batch", "-", input="\n".join(cmds) + "\n")

    async def _ensure_device(self, seg: Segment) -> None:
        dev = seg.device
        raw = await _run("ip", "-d", "-j", "link", "show", dev, check=False)
        info = json.loads(raw)[0] if raw.strip().startswith("[") else None
        if info is not None:
            data = (info.get("linkinfo") or {}).get("info_data") or {}
            if data.get("id") != seg.vni or data.get("local") != self.local or data.get("port") != self.port:
                await _run("ip", "link", "del", dev)
                info = None
        if info is None:
            await _run("ip", "link", "add", dev, "type", "vxlan", "id", str(seg.vni), "local", self.local,
                       "dstport", str(self.port), "nolearning", "proxy")
            info = {}
        if info.get("mtu") != seg.mtu:
            await _run("ip", "link", "set", dev, "mtu", str(seg.mtu))
        if info.get("master") != seg.bridge or "UP" not in (info.get("flags") or []):
            await _run("ip", "link", "set", dev, "master", seg.bridge, "up")

    async def _ensure_node_address(self, seg: Segment) -> None:
        """This node's address on the bridge (as /32: the subnet's route is the gateway's), and
        the bridge's MAC the one that address implies (what other nodes' entries point at)."""
        raw = await _run("ip", "-j", "addr", "show", "dev", seg.bridge)
        info = (json.loads(raw) or [{}])[0]
        mac = mac_of(seg.node_address)
        if info.get("address") != mac:
            await _run("ip", "link", "set", seg.bridge, "address", mac)
        have = {a["local"] for a in info.get("addr_info", []) if a.get("family") == "inet" and a.get("prefixlen") == 32}
        for ip in have - {seg.node_address}:
            await _run("ip", "addr", "del", f"{ip}/32", "dev", seg.bridge, check=False)
        if seg.node_address not in have:
            await _run("ip", "addr", "add", f"{seg.node_address}/32", "dev", seg.bridge)

    async def _read_entries(self, dev: str) -> tuple[dict[str, str], dict[str, str]]:
        fdb: dict[str, str] = {}
        for e in json.loads(await _run("bridge", "-j", "fdb", "show", "dev", dev) or "[]"):
            if "self" in (e.get("flags") or []) and e.get("dst") and e.get("mac") != "00:00:00:00:00:00":
                fdb[e["mac"]] = e["dst"]
        neigh: dict[str, str] = {}
        for e in json.loads(await _run("ip", "-j", "neigh", "show", "dev", dev) or "[]"):
            if e.get("lladdr"):
                neigh[e["dst"]] = e["lladdr"]
        return fdb, neigh

    async def teardown(self) -> None:
        """Remove every device this node made (leaving the cluster)."""
        async with self._lock:
            for dev in sorted(self._devices):
                await _run("ip", "link", "del", dev, check=False)
            self._devices.clear()
            self._applied.clear()
            self._wanted = []
            self._save_devices()
