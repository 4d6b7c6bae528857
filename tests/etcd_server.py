"""A real etcd member for tests: Debian's `etcd` binary, on free loopback ports, its data in a
temporary directory, stopped (and its data removed) at the end."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    def __init__(self, data_dir: Path, host: str = "127.0.0.1"):
        self.data_dir = data_dir
        self.host = host  # where clients reach it (the lab's hosts: the lab bridge's address)
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def start(self, timeout: float = 20.0) -> "EtcdServer":
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not installed: run scripts/setup.sh --install-only --with-tests "
                               "(it installs Debian's etcd-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client, peer = self.url, f"http://127.0.0.1:{self.peer_port}"
        self.log = open(self.data_dir / "etcd.log", "w")
        self.proc = subprocess.Popen(
            [binary, "--name", "test", "--data-dir", str(self.data_dir / "data"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--initial-cluster-state", "new"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self.proc.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if json.load(r).get("health") == "true":
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy within {timeout:.0f}s: {self.tail()}")

    def tail(self) -> str:
        try:
            return (self.data_dir / "etcd.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.data_dir, ignore_errors=True)
