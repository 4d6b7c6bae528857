"""The lab itself (scripts/lab.sh): separate hosts on one machine, and faults made for real."""
from __future__ import annotations

import pytest

from lab import Lab, until

pytestmark = [pytest.mark.integration, pytest.mark.lab]

HTTPD = ["run", "-d", "--name", "web", "-p", "8081:80", "shoal/busybox:latest", "sh", "-c",
         "mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 80 -h /w"]


def fetch(lab: Lab, src: str, dst: str, timeout: int = 2) -> str:
    p = lab.exec(src, "timeout", str(timeout), "wget", "-qO-", f"http://{lab.addr(dst)}:8081/", check=False)
    return p.stdout.strip() if p.returncode == 0 else ""


def test_hosts_are_separate_machines(lab3):
    lab = lab3
    assert [lab.exec(h, "hostname").stdout.strip() for h in lab.hosts] == lab.hosts
    assert [lab.docker(h, "info", "--format", "{{.Name}}").strip() for h in lab.hosts] == lab.hosts
    assert len({lab.addr(h) for h in lab.hosts}) == 3
    lab.docker("lab2", *HTTPD)
    try:
        assert "web" not in lab.docker("lab1", "ps", "--format", "{{.Names}}")  # another engine
        cid = lab.docker("lab2", "ps", "-q", "--filter", "name=web").strip()
        assert until("lab2's httpd from lab1", lambda: fetch(lab, "lab1", "lab2") == cid[:12], timeout=20)
        # a partition: both ways, then healed
        lab.cut("lab2")
        assert fetch(lab, "lab1", "lab2") == ""
        assert lab.exec("lab2", "timeout", "2", "ping", "-c", "1", "-W", "1", lab.addr("lab1"), check=False).returncode != 0
        lab.heal("lab2")
        assert until("lab2 back", lambda: fetch(lab, "lab3", "lab2") == cid[:12], timeout=20)
        # a power loss: the engine and its containers die; the engine comes back, its containers do not run
        lab.kill("lab2")
        assert lab.exec("lab2", "docker", "info", check=False).returncode != 0
        assert fetch(lab, "lab1", "lab2") == ""
        lab.start("lab2")
        assert "web" not in lab.docker("lab2", "ps", "--format", "{{.Names}}")
    finally:
        lab.docker("lab2", "rm", "-f", "web", check=False)
