"""Shared fixtures: a real one-node Shoal cluster on the real Docker Engine, for integration tests.

The cluster lives in a temporary data dir with its own API port, so tests never touch
a user's /var/lib/shoal. Everything it made is removed at the end (`leave --force`).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The book's stack files (CC BY-SA 4.0, see tests/fixtures/book/README.md), copied into the repository.
FIXTURES = ROOT / "tests" / "fixtures" / "book"
ARTIFACTS = ROOT / "artifacts"


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShoalCli:
    """Runs `shoal` commands against one cluster, like a user at a shell."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.env = dict(os.environ, SHOAL_DATA_DIR=data_dir, COLUMNS="250")

    def run(self, *args: str, check: bool = True, input: Optional[str] = None, timeout: float = 180,
            env: Optional[dict] = None, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True,
                           env={**self.env, **(env or {})}, input=input, timeout=timeout, cwd=cwd)
        if check and p.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def out(self, *args: str, **kw) -> str:
        return self.run(*args, **kw).stdout

    def json_lines(self, *args: str) -> list[dict]:
        return [json.loads(line) for line in self.out(*args, "--format", "json").splitlines() if line.strip()]

    def tasks(self, stack: str) -> list[dict]:
        return self.json_lines("stack", "ps", stack)

    def wait_for(self, pred: Callable[[], object], timeout: float = 60, interval: float = 0.5, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        last_exc = None
        while time.monotonic() < deadline:
            try:
                v = pred()
                if v:
                    return v
            except (AssertionError, OSError) as e:  # OSError: a port not answering yet
                last_exc = e
            time.sleep(interval)
        extra = ""
        try:
            extra = self.out("service", "ls") + "\n" + "\n".join(
                self.out("stack", "ps", "--no-trunc", s["Name"]) for s in self.json_lines("stack", "ls"))
        except Exception:
            pass
        raise AssertionError(f"timed out waiting for {what or pred}: {last_exc or ''}\n{extra}")

    def running(self, service: str) -> int:
        for s in self.json_lines("service", "ls"):
            if s["Name"] == service:
                return int(s["Replicas"].split("/")[0])
        return -1


def until(what: str, pred: Callable[[], object], timeout: float = 180, interval: float = 1.0,
          context: Callable[[], str] = lambda: "") -> object:
    """Poll pred() until it returns something truthy (connection errors while tasks change count
    as not yet); fail with the last value seen and `context()` for diagnosis."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except OSError as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    extra = context()
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
                         + (f"\n{extra}" if extra else ""))


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {p.stderr}")
    return p.stdout


def containers(**labels: str) -> list[str]:
    args = ["ps", "-q", "--no-trunc"]
    for k, v in labels.items():
        args += ["--filter", f"label={k}={v}"]
    return docker(*args).split()


@pytest.fixture(scope="session")
def engine() -> None:
    if not docker_available():
        pytest.fail("no Docker Engine answers: run scripts/install-engine.sh (integration tests need it)")


def build_images(*targets: str) -> None:
    import fcntl
    with open("/tmp/shoal-build-images.lock", "w") as lock:  # test workers share the engine's images
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_images(*targets)


def _build_images(*targets: str) -> None:
    p = subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh"), *targets], capture_output=True,
                       text=True, timeout=1800)
    if p.returncode != 0:
        pytest.fail(f"scripts/build-images.sh {' '.join(targets)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


@pytest.fixture(scope="session")
def busybox(engine) -> str:
    """The tiny test image, made by `docker import` of Debian's busybox-static."""
    build_images("busybox")
    return "shoal/busybox:latest"


@pytest.fixture(scope="session")
def images(engine) -> None:
    """All of the project's locally built images, the book's stand-ins included (no registry here)."""
    build_images()


LOCK_PATH = "/tmp/shoal-node.lock"


def _new_cluster(tmp_root: Path, init_args: tuple[str, ...] = ()) -> ShoalCli:
    """A node owns the host's datapath (nftables table, published ports): one cluster at a time
    per machine, so concurrent test runs take turns on a file lock."""
    import fcntl
    lock = open(LOCK_PATH, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    data = tmp_root / "shoal-data"
    cli = ShoalCli(str(data))
    cli.lock = lock
    try:
        cli.run("init", "--port", str(free_port()), *init_args)
    except BaseException:
        lock.close()
        raise
    return cli


def _destroy(cli: ShoalCli) -> None:
    try:
        cli.run("leave", "--force", check=False, timeout=120)
        shutil.rmtree(cli.data_dir, ignore_errors=True)
    finally:
        cli.lock.close()


@pytest.fixture(scope="module")
def cluster(engine, busybox, tmp_path_factory) -> ShoalCli:
    """A fresh one-node cluster per test module."""
    cli = _new_cluster(tmp_path_factory.mktemp("cluster"))
    yield cli
    _destroy(cli)


@pytest.fixture
def fresh_cluster(engine, busybox, tmp_path_factory) -> ShoalCli:
    """A cluster of its own for one test (for tests that restart or lock the daemon)."""
    cli = _new_cluster(tmp_path_factory.mktemp("cluster"))
    yield cli
    _destroy(cli)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.exists():
        pytest.fail(f"the book's fixtures are missing at {FIXTURES}")
    return FIXTURES


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def lab3(engine, busybox):
    """Three lab hosts (scripts/lab.sh up 3), one lab at a time on this machine."""
    import fcntl
    from lab import LAB_LOCK, Lab
    lock = open(LAB_LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    lab = Lab(3)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        lock.close()


# -- running the suite on two workers (scripts/test.sh: pytest -n 2 --dist loadgroup) --------
# The lab's hosts have their own engines and network namespaces, so the tests on the lab and
# the tests on this machine's own engine never share a resource and can run side by side;
# within each group tests run one after the other (a node owns its host's datapath).
@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.xdist_group("lab"))
        elif item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group("node"))
