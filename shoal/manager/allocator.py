"""Address and port allocation: network subnets, service VIPs, dynamic published ports.

Pure functions over what is already allocated, so every node agrees (the manager
decides once and stores it).
"""
from __future__ import annotations

import functools
import ipaddress
import random
from typing import Iterable, Optional

NETWORK_POOL = ipaddress.ip_network("10.210.0.0/16")  # one /24 per Shoal network
VIP_POOL = ipaddress.ip_network("10.211.0.0/16")  # VIPs of network N live in 10.211.N.0/24
DYNAMIC_PORTS = range(30000, 32768)


class AllocationError(Exception):
    pass


def allocate_subnet(used: Iterable[str], requested: Optional[str] = None) -> tuple[str, str, int]:
    """(subnet, gateway, index) for a new network. `index` numbers the VIP block."""
    used_nets = {ipaddress.ip_network(u) for u in used if u}
    if requested:
        net = ipaddress.ip_network(requested, strict=False)
        for u in used_nets:
            if net.overlaps(u):
                raise AllocationError(f"subnet {requested} overlaps {u}, already used by another network")
        index = _free_index(used_nets)
        return str(net), str(next(net.hosts())), index
    # Start at a random block: clusters sharing an engine (or a user's own networks in the
    # pool) rarely collide, and a collision is repaired by reallocation (see Cluster).
    blocks = list(NETWORK_POOL.subnets(new_prefix=24))
    start = random.randrange(1, len(blocks))
    for i in list(range(start, len(blocks))) + list(range(1, start)):
        candidate = blocks[i]
        if not any(candidate.overlaps(u) for u in used_nets):
            return str(candidate), str(candidate.network_address + 1), i
    raise AllocationError("no free subnet left in the Shoal pool 10.210.0.0/16")


def _free_index(used_nets: set) -> int:
    for i, candidate in enumerate(NETWORK_POOL.subnets(new_prefix=24)):
        if i and not any(candidate.overlaps(u) for u in used_nets):
            return i
    raise AllocationError("no free VIP block")


def vip_block(subnet: str) -> ipaddress.IPv4Network:
    """The VIP /24 that pairs with a network's subnet (same third octet for pool subnets)."""
    net = ipaddress.ip_network(subnet, strict=False)
    if net.subnet_of(NETWORK_POOL):  # type: ignore[arg-type]
        third = int(net.network_address) >> 8 & 0xFF
    else:
        third = (int(net.network_address) >> 8 & 0xFF) ^ 0x80
    return ipaddress.ip_network(f"{VIP_POOL.network_address + third * 256}/24")


def allocate_vip(subnet: str, used: Iterable[str]) -> str:
    taken = set(used)
    for host in vip_block(subnet).hosts():
        if str(host) not in taken and int(host) & 0xFF not in (0, 1, 255):
            return str(host)
    raise AllocationError(f"no free virtual IP for network {subnet}")


def allocate_port(used: Iterable[int]) -> int:
    taken = set(used)
    for p in DYNAMIC_PORTS:
        if p not in taken:
            return p
    raise AllocationError("no free port in 30000-32767")


# VXLAN segments of Shoal networks: above the VNIs Docker's own overlay driver takes
# (4096 + n), drawn at random so that two clusters sharing a machine rarely pick the same.
VNI_FIRST, VNI_LAST = 0x10000, 0xFFFFFF


def allocate_vni(used: Iterable[int]) -> int:
    taken = set(used)
    for _ in range(1000):
        vni = random.randint(VNI_FIRST, VNI_LAST)
        if vni not in taken:
            return vni
    raise AllocationError("no free VXLAN network identifier")


@functools.lru_cache(maxsize=256)
def _host_range(subnet: str) -> tuple[int, int, type]:
    """The first and last host address of `subnet`, as integers, and its address class (parsed
    once per subnet: the scheduler asks for an address per task placed)."""
    net = ipaddress.ip_network(subnet, strict=False)
    return int(net.network_address) + 1, int(net.broadcast_address) - 1, type(net.network_address)


def allocate_address(subnet: str, gateway: str, in_use, start: int = 0) -> tuple[str, int]:
    """A free host address of `subnet` (not the gateway): (address, where the next search
    starts). `in_use(ip)` says whether an address is taken. Searching on from the last
    address given spreads reuse, so an address freed a moment ago is not given again at once
    (other nodes may still hold a forwarding entry for it)."""
    first, last, address = _host_range(subnet)
    size = last - first + 1
    if size <= 0:
        raise AllocationError(f"subnet {subnet} has no host addresses")
    pos = start if first <= start <= last else first
    for i in range(size):
        n = first + (pos - first + i) % size
        ip = str(address(n))
        if ip != gateway and not in_use(ip):
            return ip, n + 1
    raise AllocationError(f"no free address left in {subnet}")


def attach_block_size(subnet: str) -> int:
    """Addresses in each node's block of an attachable network: 16 on a /24 or larger, 4 on
    the small subnets a /27 to /26 leave (0: too small for blocks)."""
    prefix = ipaddress.ip_network(subnet, strict=False).prefixlen
    return 16 if prefix <= 24 else 4 if prefix <= 27 else 0


def allocate_block(subnet: str, gateway: str, in_use, size: int) -> str:
    """A free aligned block of `size` addresses of `subnet` (a CIDR), searched from the top
    of the subnet down (task addresses are given from the bottom up), holding neither the
    gateway nor the subnet's network and broadcast addresses."""
    net = ipaddress.ip_network(subnet, strict=False)
    if size <= 0 or size & (size - 1):
        raise AllocationError(f"subnet {subnet} is too small for a block of addresses per node")
    bits = size.bit_length() - 1
    low, high = int(net.network_address), int(net.broadcast_address)
    gw = int(ipaddress.ip_address(gateway)) if gateway else -1
    for base in range(high + 1 - size, low - 1, -size):
        if base <= low or base + size - 1 >= high or base <= gw < base + size:
            continue
        if not any(in_use(str(ipaddress.ip_address(n))) for n in range(base, base + size)):
            return f"{ipaddress.ip_address(base)}/{32 - bits}"
    raise AllocationError(f"no free block of {size} addresses left in {subnet}")


def block_addresses(block: str) -> list[str]:
    net = ipaddress.ip_network(block, strict=False)
    return [str(ipaddress.ip_address(n)) for n in range(int(net.network_address), int(net.broadcast_address) + 1)]
