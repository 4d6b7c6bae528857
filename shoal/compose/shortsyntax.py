"""Parsers for the one-line forms of ports and volumes, into their long-syntax dicts.

Pure string functions raising ValueError; callers add the file/line/key to the message.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Optional

PROTOCOLS = ("tcp", "udp", "sctp")
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")
_PROPAGATIONS = {"shared", "rshared", "slave", "rslave", "private", "rprivate"}
_CONSISTENCY = {"consistent", "cached", "delegated"}


def parse_port_spec(spec: str) -> list[dict]:
    """``[ip:][published[-end]:]target[-end][/proto]`` -> one dict per port (ranges expand)."""
    text = spec.strip()
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
        protocol = protocol.lower()
        if protocol not in PROTOCOLS:
            raise ValueError(f"invalid protocol {protocol!r} in port {spec!r}")
    host_ip = None
    if text.startswith("["):  # [ipv6]:published:target
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ValueError(f"invalid port {spec!r}")
        host_ip, text = text[1:end], text[end + 2:]
        pieces = text.split(":")
        if len(pieces) != 2:
            raise ValueError(f"invalid port {spec!r}")
    else:
        pieces = text.rsplit(":", 2)
        if len(pieces) == 3:
            host_ip = pieces.pop(0)
    if host_ip is not None:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise ValueError(f"invalid port {spec!r}") from None
    published_text = pieces[0] if len(pieces) == 2 else ""
    targets = _port_range(pieces[-1], spec, allow_zero=False)
    published: list[Optional[int]]
    if published_text == "":
        published = [None] * len(targets)
    else:
        published = list(_port_range(published_text, spec, allow_zero=True))
        if len(published) != len(targets):
            raise ValueError(f"port ranges of different sizes in {spec!r}")
    result = []
    for target, pub in zip(targets, published):
        port = {"target": target, "published": pub, "protocol": protocol, "mode": "ingress"}
        if host_ip:
            port["host_ip"] = host_ip
        result.append(port)
    return result


def _port_range(text: str, spec: str, allow_zero: bool) -> range:
    start, sep, end = text.partition("-")
    try:
        first = int(start)
        last = int(end) if sep else first
    except ValueError:
        raise ValueError(f"invalid port {spec!r}") from None
    low = 0 if allow_zero else 1
    if not (low <= first <= 65535 and low <= last <= 65535) or last < first:
        raise ValueError(f"invalid port {spec!r}")
    return range(first, last + 1)


def is_abs_target(path: str) -> bool:
    return path.startswith("/") or path.startswith("\\") or bool(_WINDOWS_ABS.match(path))


def is_host_path(source: str) -> bool:
    """Compose's rule: a source that looks like a path is a bind mount, anything else a volume name."""
    return source.startswith((".", "/", "~", "\\")) or bool(_WINDOWS_ABS.match(source))


def split_volume_spec(spec: str) -> list[str]:
    """Split on ':' but keep Windows drive letters (``vol:C:\\data``) with their path."""
    raw = spec.split(":")
    parts: list[str] = []
    i = 0
    while i < len(raw):
        part = raw[i]
        nxt = raw[i + 1] if i + 1 < len(raw) else None
        is_drive = len(part) == 1 and part.isalpha() and nxt is not None and (
            nxt.startswith("\\") or (nxt.startswith("/") and (parts or len(raw) > 2)))
        if is_drive:
            parts.append(f"{part}:{nxt}")
            i += 2
        else:
            parts.append(part)
            i += 1
    return parts


def parse_volume_spec(spec: str) -> dict:
    """``[source:]target[:options]`` -> a long-syntax mount dict (source not yet resolved)."""
    parts = split_volume_spec(spec)
    if not spec or len(parts) > 3 or any(p == "" for p in parts):
        raise ValueError(f"invalid volume specification {spec!r}")
    if len(parts) == 1:
        source, target, options = None, parts[0], ""
    else:
        source, target = parts[0], parts[1]
        options = parts[2] if len(parts) == 3 else ""
    if not is_abs_target(target):
        raise ValueError(f"invalid volume specification {spec!r}: mount path must be absolute")
    mount: dict = {"type": "bind" if source and is_host_path(source) else "volume"}
    if source:
        mount["source"] = source
    mount["target"] = target
    for option in filter(None, options.split(",")):
        if option == "ro":
            mount["read_only"] = True
        elif option in ("rw", "z", "Z"):
            continue
        elif option == "nocopy":
            mount.setdefault("volume", {})["nocopy"] = True
        elif option in _PROPAGATIONS:
            mount.setdefault("bind", {})["propagation"] = option
        elif option in _CONSISTENCY:
            mount["consistency"] = option
        else:
            raise ValueError(f"invalid volume specification {spec!r}: unknown option {option!r}")
    return mount
