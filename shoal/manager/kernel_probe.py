"""Asks this machine's kernel whether it can do what a network option needs, before promising it.

Docker Swarm accepts an encrypted overlay on a kernel without ESP, attaches containers,
and then drops every packet (a warning in the engine's log is the only trace). Shoal asks
the kernel first: it adds the IPsec state an encrypted overlay would need (ESP with
AES-GCM) in a throw-away network namespace, and reports what the kernel said.
"""
from __future__ import annotations

import functools
import subprocess
from typing import Optional

_ESP_PROBE = ["unshare", "--net", "ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2",
              "proto", "esp", "spi", "0x100", "reqid", "1", "mode", "transport",
              "aead", "rfc4106(gcm(aes))", "0x" + "01" * 20, "128"]


@functools.lru_cache(maxsize=1)
def esp_missing() -> Optional[str]:
    """None when the kernel takes an ESP (AES-GCM) state; else what it said."""
    try:
        p = subprocess.run(_ESP_PROBE, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"could not ask the kernel ({e})"
    if p.returncode == 0:
        return None
    return (p.stderr or p.stdout).strip().splitlines()[-1] if (p.stderr or p.stdout).strip() else f"exit {p.returncode}"


def encryption_refusal(network: str) -> str:
    """Why Shoal refuses `encrypted` on a network (it never sends clear text for one)."""
    missing = esp_missing()
    if missing is not None:
        return (f"network {network}: driver option \"encrypted\" needs the kernel's IPsec ESP transform "
                f"(xfrm with rfc4106(gcm(aes))), which this kernel lacks: {missing}. Shoal refuses the "
                f"network rather than send its traffic in clear text; remove the option, or run on a "
                f"kernel with ESP (CONFIG_INET_ESP, CONFIG_CRYPTO_GCM)")
    return (f"network {network}: driver option \"encrypted\" is not supported by Shoal yet (the overlay "
            f"is not encrypted); remove the option rather than have the traffic sent in clear text")
