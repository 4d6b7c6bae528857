"""`lab.sh down` leaves no trace (a module of its own: the lab fixture of other modules holds
the lab's lock while they run)."""
from __future__ import annotations

import subprocess

import pytest

from lab import Lab

pytestmark = [pytest.mark.integration, pytest.mark.lab]


def test_down_leaves_no_trace(engine, busybox):
    import fcntl
    from lab import LAB_LOCK
    with open(LAB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lab = Lab(2)
        lab.up()
        lab.down()

    def sh(cmd: str) -> str:
        return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout
    assert "lab" not in sh("ip netns list | grep -w 'lab[0-9]*'")
    assert "shoallab0" not in sh("ip -o link show")
    assert "shoallab0" not in sh("iptables -S FORWARD")
    assert "/run/shoal-lab" not in sh("cat /proc/self/mountinfo") and "/var/lib/shoal-lab" not in sh(
        "cat /proc/self/mountinfo")
    assert "dockerd --data-root /var/lib/shoal-lab" not in sh("ps -eo args")
