"""Tests' handle on scripts/lab.sh: several hosts on this machine, each with its own engine.

Only the script's verbs are used (up, exec, addr, kill, start, cut, heal, load, down), as
any other tool driving the lab would. The hosts share this machine's file system (only
their network, hostname and engine are their own): a stack file in a test's tmp_path is
readable on every host.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
LAB = str(ROOT / "scripts" / "lab.sh")
LAB_LOCK = "/tmp/shoal-lab.lock"


class LabError(AssertionError):
    pass


class Lab:
    def __init__(self, n: int):
        self.n = n
        self.hosts = [f"lab{k}" for k in range(1, n + 1)]

    def _run(self, *args: str, check: bool = True, timeout: float = 180, input: Optional[str] = None
             ) -> subprocess.CompletedProcess:
        p = subprocess.run(["bash", LAB, *args], capture_output=True, text=True, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise LabError(f"lab.sh {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    def up(self, images: tuple[str, ...] = ()) -> None:
        self._run("down", check=False)
        self._run("up", str(self.n), timeout=600)
        if images:
            self._run("load", *images, timeout=900)

    def down(self) -> None:
        self._run("down", check=False)

    def exec(self, host: str, *cmd: str, check: bool = True, timeout: float = 180,
             input: Optional[str] = None) -> subprocess.CompletedProcess:
        return self._run("exec", host, *cmd, check=check, timeout=timeout, input=input)

    def shoal(self, host: str, *args: str, check: bool = True, timeout: float = 180,
              input: Optional[str] = None) -> str:
        return self.exec(host, "shoal", *args, check=check, timeout=timeout, input=input).stdout

    def docker(self, host: str, *args: str, check: bool = True) -> str:
        return self.exec(host, "docker", *args, check=check).stdout

    def addr(self, host: str) -> str:
        return self._run("addr", host).stdout.strip()

    def kill(self, host: str) -> None:
        self._run("kill", host)

    def start(self, host: str) -> None:
        self._run("start", host)

    def cut(self, host: str) -> None:
        self._run("cut", host)

    def heal(self, host: str) -> None:
        self._run("heal", host)

    # -- a Shoal cluster on the lab ---------------------------------------------------------
    def cluster(self, manager: str = "lab1", workers: Optional[list[str]] = None, init_args: tuple = ()) -> None:
        """`shoal init` on `manager`, `shoal join` on every other host (or `workers`)."""
        self.shoal(manager, "init", "--advertise-addr", self.addr(manager), *init_args)
        token = self.shoal(manager, "join-token", "-q", "worker").strip()
        for h in workers if workers is not None else [h for h in self.hosts if h != manager]:
            self.shoal(h, "join", "--token", token, f"{self.addr(manager)}:4343")

    def json_lines(self, host: str, *args: str) -> list[dict]:
        return [json.loads(line) for line in self.shoal(host, *args, "--format", "json").splitlines() if line.strip()]

    def nodes(self, host: str = "lab1") -> dict[str, dict]:
        """hostname -> node (from `node ls`)."""
        return {n["Hostname"]: n for n in self.json_lines(host, "node", "ls")}

    def tasks(self, service: str, host: str = "lab1") -> list[dict]:
        return self.json_lines(host, "service", "ps", "--no-trunc", service)

    def running_on(self, service: str, host: str = "lab1") -> dict[str, int]:
        """node hostname -> tasks of `service` desired and currently running there."""
        out: dict[str, int] = {}
        for t in self.tasks(service, host):
            if t["DesiredState"] == "Running" and t["CurrentState"].startswith("Running"):
                out[t["Node"]] = out.get(t["Node"], 0) + 1
        return out

    def containers(self, host: str, service: str) -> list[str]:
        """Running containers of `service` on `host`'s engine."""
        return self.docker(host, "ps", "-q", "--filter", f"label=shoal.service.name={service}").split()


def until(what: str, pred: Callable[[], object], timeout: float = 60, interval: float = 0.3,
          what_else: Optional[Callable[[], object]] = None) -> object:
    """pred's value once true; else an error naming `what`, pred's last value and, if given,
    what_else() (the state that kept it false)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (AssertionError, subprocess.SubprocessError, ValueError, KeyError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    more = f"; {what_else()!r}" if what_else else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{more}")
