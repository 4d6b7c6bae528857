"""Object ids as Swarm makes them: 25 random base-36 characters."""
from __future__ import annotations

import os

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    n = int.from_bytes(os.urandom(17), "big")  # 136 bits > 25 base-36 digits (129 bits)
    out = []
    for _ in range(25):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(out)
