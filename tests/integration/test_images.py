"""The offline-built example images, exercised with plain `docker run`.

Needs a Docker Engine (scripts/install-engine.sh) and builds the images with
scripts/build-images.sh first (cached: seconds when they are up to date, about
two minutes from nothing).  Every object made here carries the label
``shoal.test=images`` and is removed afterwards.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-images.sh"
LABEL = "shoal.test=images"

TAGS = {
    # primary: aliases that must be the very same image
    "shoal/busybox:latest": [],
    "shoal/debian-python:bookworm": [],
    "shoal/todo-app:latest": ["diamol/ch06-todo-list:latest"],
    "shoal/postgres:latest": ["diamol/postgres:11.5", "diamol/postgres:11.6"],
    "shoal/numbers-api:latest": ["diamol/ch08-numbers-api:latest"],
    "shoal/numbers-api:v2": ["diamol/ch08-numbers-api:v2"],
    "shoal/numbers-api:v3": ["diamol/ch08-numbers-api:v3"],
    "shoal/numbers-api:v5": ["diamol/ch14-numbers-api:v5"],
    "shoal/numbers-web:latest": ["diamol/ch08-numbers-web:latest"],
    "shoal/numbers-web:v2": ["diamol/ch08-numbers-web:v2"],
    "shoal/numbers-web:v3": ["diamol/ch08-numbers-web:v3"],
    "shoal/numbers-web:v5": ["diamol/ch14-numbers-web:v5"],
}


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def images():
    if not engine_answers():
        pytest.skip("no Docker Engine answers (run scripts/install-engine.sh)")
    res = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, f"build-images.sh failed:\n{res.stdout}\n{res.stderr}"
    return res


class Docker:
    """Creates labelled containers/networks/volumes and removes them afterwards."""

    def __init__(self):
        self.suffix = uuid.uuid4().hex[:8]
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def name(self, base: str) -> str:
        return f"shoal-it-{base}-{self.suffix}"

    def run(self, image: str, *args: str, name: str | None = None, cmd: tuple = ()) -> str:
        name = name or self.name(uuid.uuid4().hex[:6])
        self.containers.append(name)
        docker("run", "-d", "--name", name, "--label", LABEL, *args, image, *cmd)
        return name

    def network(self, base: str) -> str:
        name = self.name(base)
        docker("network", "create", "--label", LABEL, name)
        self.networks.append(name)
        return name

    def volume(self, base: str) -> str:
        name = self.name(base)
        docker("volume", "create", "--label", LABEL, name)
        self.volumes.append(name)
        return name

    def remove_container(self, name: str) -> None:
        docker("rm", "-f", "-v", name, check=False)

    def cleanup(self):
        for c in reversed(self.containers):
            docker("rm", "-f", "-v", c, check=False)
        for n in self.networks:
            docker("network", "rm", n, check=False)
        for v in self.volumes:
            docker("volume", "rm", "-f", v, check=False)


@pytest.fixture
def dk(images):
    d = Docker()
    yield d
    d.cleanup()


def ip_of(container: str, network: str | None = None) -> str:
    nets = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container).stdout)
    if network:
        return nets[network]["IPAddress"]
    return next(iter(nets.values()))["IPAddress"]


def request(host: str, method: str, path: str, body: str | None = None, timeout: float = 10):
    conn = http.client.HTTPConnection(host, 80, timeout=timeout)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace"), dict(resp.getheaders())
    finally:
        conn.close()


def wait_http(host: str, path: str = "/", timeout: float = 30, want=None):
    """Poll until the server answers (with status `want`, if given)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, body, headers = request(host, "GET", path, timeout=5)
            if want is None or status == want:
                return status, body, headers
            last = (status, body[:300])
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"http://{host}{path} did not answer as wanted in {timeout}s: {last}")


def logs(container: str) -> str:
    res = docker("logs", container, check=False)
    return res.stdout + res.stderr


# ---------------------------------------------------------------------------- images
def test_build_is_cached_and_tags_exist(images):
    start = time.monotonic()
    res = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    assert took < 60, f"second run took {took:.0f}s"
    assert "building" not in res.stderr, res.stderr
    assert "up to date" in res.stderr
    for primary, aliases in TAGS.items():
        info = json.loads(docker("image", "inspect", primary).stdout)[0]
        assert (info["Config"]["Labels"] or {}).get("shoal.build.hash"), primary
        for alias in aliases:
            assert docker("image", "inspect", "-f", "{{.Id}}", alias).stdout == info["Id"] + "\n", alias
    # the version tags are distinct images (a rolling update sees a change)
    ids = {docker("image", "inspect", "-f", "{{.Id}}", t).stdout for t in TAGS if "numbers-api" in t}
    assert len(ids) == 4


def test_busybox_image(dk):
    out = docker("run", "--rm", "--label", LABEL, "shoal/busybox", "sh", "-c",
                 "echo hi; cat /etc/passwd; ls -ld /tmp; which wget nc httpd").stdout
    assert out.startswith("hi\n")
    assert "root:x:0:0:root:/root:/bin/sh" in out
    assert "drwxrwxrwt" in out
    assert "/bin/wget" in out and "/bin/httpd" in out


def test_debian_python_base(dk):
    out = docker("run", "--rm", "--label", LABEL, "shoal/debian-python:bookworm",
                 "python3", "-c", "import sys; print(sys.version_info[:2])").stdout
    assert out.strip() == "(3, 11)"


# ---------------------------------------------------------------------------- todo app
def test_todo_sqlite_add_and_list(dk):
    c = dk.run("diamol/ch06-todo-list")
    ip = ip_of(c)
    status, body, _ = wait_http(ip, "/", want=200)
    assert "You have 0 items to do." in body
    status, body, headers = request(ip, "POST", "/new", "item=Buy+milk+%26+eggs")
    assert status == 303 and headers["Location"] == "/list"
    request(ip, "POST", "/new", "item=Write+tests")
    status, body, _ = request(ip, "GET", "/list")
    assert status == 200
    assert "Buy milk &amp; eggs" in body and "Write tests" in body
    assert "<table" in body
    status, body, _ = request(ip, "GET", "/")
    assert "You have 2 items to do." in body
    status, body, _ = request(ip, "GET", "/new")
    assert status == 200 and "<form" in body and 'name="item"' in body
    # the SQLite file is where the book's app keeps it
    assert docker("exec", c, "test", "-s", "/data/todo-list.db", check=False).returncode == 0


def test_todo_diagnostics_shows_hostname_and_provider(dk):
    c = dk.run("diamol/ch06-todo-list")
    cid = docker("inspect", "-f", "{{.Id}}", c).stdout.strip()
    status, body, _ = wait_http(ip_of(c), "/diagnostics", want=200)
    assert cid[:12] in body
    assert "Sqlite" in body
    c2 = dk.run("diamol/ch06-todo-list", "--hostname", "replica-two")
    status, body, _ = wait_http(ip_of(c2), "/diagnostics", want=200)
    assert "replica-two" in body


def test_todo_stops_promptly(dk):
    c = dk.run("diamol/ch06-todo-list")
    wait_http(ip_of(c), "/", want=200)
    start = time.monotonic()
    docker("stop", c)
    assert time.monotonic() - start < 5
    assert docker("inspect", "-f", "{{.State.ExitCode}}", c).stdout.strip() == "0"


def write_config(tmp_path: Path, config: dict | None, secrets: dict | None) -> list[str]:
    mounts = []
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
        mounts += ["-v", f"{tmp_path / 'config.json'}:/app/config/config.json:ro"]
    if secrets is not None:
        (tmp_path / "secrets.json").write_text(json.dumps(secrets))
        mounts += ["-v", f"{tmp_path / 'secrets.json'}:/app/config/secrets.json:ro"]
    return mounts


PG_CONFIG = {"Logging": {"LogLevel": {"Default": "Information"}}, "Database": {"Provider": "Postgres"}}
PG_SECRETS = {"ConnectionStrings": {"ToDoDb": "Server=todo-db;Database=todo;User Id=postgres;Password=postgres;"}}


def start_db(dk: Docker, net: str, vol: str, tag: str) -> str:
    return dk.run(
        f"diamol/postgres:{tag}",
        "--network", net, "--network-alias", "todo-db",
        "-e", "PGDATA=/var/lib/postgresql/data/pgdata",
        "-v", f"{vol}:/var/lib/postgresql/data",
    )


def test_todo_postgres_items_survive_db_replacement(dk, tmp_path):
    net = dk.network("app-net")
    vol = dk.volume("todo-db-data")
    db = start_db(dk, net, vol, "11.5")
    # the book's own config + secret files, bind-mounted as Shoal mounts them
    fixtures = ROOT / "tests" / "fixtures" / "book" / "diamol-ch13" / "todo-list"
    if not (fixtures / "configs" / "config.json").exists():
        fixtures = ROOT / "examples" / "todo"
    web = dk.run(
        "diamol/ch06-todo-list", "--network", net,
        "-v", f"{fixtures / 'configs' / 'config.json'}:/app/config/config.json:ro",
        "-v", f"{fixtures / 'secrets' / 'secrets.json'}:/app/config/secrets.json:ro",
    )
    ip = ip_of(web, net)
    status, body, _ = wait_http(ip, "/", want=200, timeout=60)
    assert "You have 0 items to do." in body
    status, body, _ = request(ip, "GET", "/diagnostics")
    assert "Postgres" in body and "connected" in body
    assert request(ip, "POST", "/new", "item=Survive+the+upgrade")[0] == 303
    assert "Survive the upgrade" in request(ip, "GET", "/list")[1]

    # the database's data is in the volume, under PGDATA
    assert docker("exec", db, "test", "-s", "/var/lib/postgresql/data/pgdata/PG_VERSION",
                  check=False).returncode == 0
    # a fast stop: the entrypoint turns SIGTERM into postgres' fast shutdown
    start = time.monotonic()
    docker("kill", "-s", "TERM", db)
    docker("wait", db, timeout=30)
    assert time.monotonic() - start < 10
    assert docker("inspect", "-f", "{{.State.ExitCode}}", db).stdout.strip() == "0"
    dk.remove_container(db)

    # no database: an error page, and the app keeps running
    status, body, _ = request(ip, "GET", "/")
    assert status == 500 and "cannot be reached" in body

    # the "upgrade": a new container of the 11.6 tag on the same volume
    db2 = start_db(dk, net, vol, "11.6")
    status, body, _ = wait_http(ip, "/list", want=200, timeout=60)
    assert "Survive the upgrade" in body
    assert "using the existing database cluster" in logs(db2)
    assert request(ip, "POST", "/new", "item=After+the+upgrade")[0] == 303
    status, body, _ = request(ip, "GET", "/")
    assert "You have 2 items to do." in body


def test_todo_postgres_without_connection_string_shows_error(dk, tmp_path):
    c = dk.run("diamol/ch06-todo-list", *write_config(tmp_path, PG_CONFIG, None))
    ip = ip_of(c)
    status, body, _ = wait_http(ip, "/", want=500)
    assert "The database cannot be reached" in body
    status, body, _ = request(ip, "GET", "/list")
    assert status == 500
    assert request(ip, "POST", "/new", "item=x")[0] == 500
    # diagnostics still answers, naming the provider
    status, body, _ = request(ip, "GET", "/diagnostics")
    assert status == 200 and "Postgres" in body and "no connection string" in body


def test_todo_secrets_override_config_and_env(dk, tmp_path):
    # config says Postgres, the secrets file switches back to Sqlite (later wins)
    mounts = write_config(tmp_path, PG_CONFIG, {"Database": {"Provider": "Sqlite"}})
    c = dk.run("diamol/ch06-todo-list", *mounts)
    status, body, _ = wait_http(ip_of(c), "/", want=200)
    assert "You have 0 items to do." in body
    # .NET-style environment variables override the files
    c2 = dk.run("diamol/ch06-todo-list", *mounts, "-e", "Database__Provider=Postgres")
    wait_http(ip_of(c2), "/", want=500)


def test_postgres_password_and_database(dk):
    net = dk.network("pg")
    db = dk.run("diamol/postgres:11.6", "--network", net, "--network-alias", "pg",
                "-e", "POSTGRES_USER=app", "-e", "POSTGRES_PASSWORD=s3cret", "-e", "POSTGRES_DB=appdb")
    client = ["docker", "run", "--rm", "--label", LABEL, "--network", net, "--entrypoint", "psql"]
    deadline = time.monotonic() + 60
    while True:
        res = subprocess.run(client + ["-e", "PGPASSWORD=s3cret", "diamol/postgres:11.6",
                                       "-h", "pg", "-U", "app", "-d", "appdb", "-tAc", "select current_database()"],
                             capture_output=True, text=True)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert res.stdout.strip() == "appdb", res.stderr + logs(db)
    bad = subprocess.run(client + ["-e", "PGPASSWORD=wrong", "diamol/postgres:11.6",
                                   "-h", "pg", "-U", "app", "-d", "appdb", "-tAc", "select 1"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr


# ---------------------------------------------------------------------------- numbers
def dotnet(container: str, *args: str) -> int:
    return docker("exec", container, "dotnet", *args, check=False).returncode


def test_numbers_api_rng_health_and_fail(dk):
    c = dk.run("diamol/ch08-numbers-api")
    ip = ip_of(c)
    wait_http(ip, "/health", want=200)
    for _ in range(5):
        status, body, _ = request(ip, "GET", "/rng")
        assert status == 200 and re.fullmatch(r"\d+", body) and 0 <= int(body) <= 100
    check = ("Utilities.HttpCheck.dll", "-u", "http://localhost/health", "-t", "500")
    assert dotnet(c, *check) == 0
    assert request(ip, "POST", "/fail", "")[0] == 200
    assert request(ip, "GET", "/health")[0] == 500
    assert request(ip, "GET", "/rng")[0] == 500
    assert dotnet(c, *check) == 1
    assert request(ip, "POST", "/reset", "")[0] == 200
    assert dotnet(c, *check) == 0


def test_dotnet_shim_exit_codes(dk):
    c = dk.run("diamol/ch08-numbers-api:v3")
    wait_http(ip_of(c), "/health", want=200)
    assert dotnet(c, "Utilities.HttpCheck.dll", "-u", "http://localhost/health", "-t", "500") == 0
    assert dotnet(c, "Utilities.HttpCheck.dll", "-u", "http://localhost/health") == 0
    assert dotnet(c, "Utilities.HttpCheck.dll", "-u", "http://localhost/nope", "-t", "500") == 1
    assert dotnet(c, "Utilities.HttpCheck.dll", "-u", "http://localhost:81/health", "-t", "500") == 1
    assert dotnet(c, "Utilities.HttpCheck.dll") == 1
    assert dotnet(c, "Something.Else.dll") == 1
    # the image's own health check uses it
    hc = json.loads(docker("image", "inspect", "-f", "{{json .Config.Healthcheck}}",
                           "diamol/ch08-numbers-api:v3").stdout)
    assert hc["Test"][:3] == ["CMD", "dotnet", "Utilities.HttpCheck.dll"]


def test_numbers_api_fail_after_call_count(dk):
    c = dk.run("diamol/ch08-numbers-api", "-e", "FailAfterCallCount=3")
    ip = ip_of(c)
    wait_http(ip, "/health", want=200)
    assert [request(ip, "GET", "/rng")[0] for _ in range(4)] == [200, 200, 200, 500]
    assert request(ip, "GET", "/health")[0] == 500


def test_numbers_v5_broken_unless_broken_false(dk):
    # v5-bad.yml: no environment -> the image's default Broken=true -> unhealthy
    bad = dk.run("diamol/ch14-numbers-api:v5", "--health-interval", "1s", "--health-retries", "2",
                 "--health-start-period", "0s")
    # v5.yml: Broken=false -> healthy
    good = dk.run("diamol/ch14-numbers-api:v5", "-e", "Broken=false", "--health-interval", "1s",
                  "--health-retries", "2", "--health-start-period", "0s")
    assert wait_http(ip_of(bad), "/health", want=500)[0] == 500
    assert wait_http(ip_of(good), "/health", want=200)[0] == 200
    assert request(ip_of(good), "GET", "/rng")[0] == 200

    def health(c):
        return docker("inspect", "-f", "{{.State.Health.Status}}", c).stdout.strip()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (health(bad) != "unhealthy" or health(good) != "healthy"):
        time.sleep(0.5)
    assert health(bad) == "unhealthy"
    assert health(good) == "healthy"
    # ch08 v2/v3 are healthy without any environment
    v2 = dk.run("diamol/ch08-numbers-api:v2")
    assert wait_http(ip_of(v2), "/health", want=200)[0] == 200


def test_numbers_web_shows_number_from_api(dk):
    net = dk.network("numbers")
    api = dk.run("diamol/ch08-numbers-api:v2", "--network", net, "--network-alias", "numbers-api")
    web = dk.run("diamol/ch08-numbers-web:v2", "--network", net,
                 "-e", "RngApi__Url=http://numbers-api/rng")
    wait_http(ip_of(api, net), "/health", want=200)
    ip = ip_of(web, net)
    status, body, _ = wait_http(ip, "/", want=200)
    assert re.search(r'class="n">\d+<', body), body
    status, body, _ = request(ip, "GET", "/rng")
    assert status == 200 and body.isdigit()
    assert request(ip, "GET", "/health")[0] == 200
    hc = json.loads(docker("image", "inspect", "-f", "{{json .Config.Healthcheck}}",
                           "diamol/ch14-numbers-web:v5").stdout)
    assert "dotnet" in hc["Test"]
    assert dotnet(web, "Utilities.HttpCheck.dll", "-u", "http://localhost/health") == 0
    # API broken -> the page says so
    request(ip_of(api, net), "POST", "/fail", "")
    status, body, _ = request(ip, "GET", "/")
    assert "RNG service unavailable!" in body
    assert request(ip, "GET", "/rng")[0] == 502


# ---------------------------------------------------------------------------- install-engine.sh
INSTALL = ROOT / "scripts" / "install-engine.sh"


def test_install_engine_is_a_fast_noop_when_the_engine_answers(images):
    start = time.monotonic()
    res = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "nothing to do" in res.stderr
    assert time.monotonic() - start < 15


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a dockerd: needs root")
def test_install_engine_starts_a_second_engine(images, tmp_path_factory):
    # The start-and-wait path, on a private engine beside the shared one: own
    # socket, data root, exec root, pid file and its own bridge, no iptables.
    # (Never `--bridge none`: dockerd then deletes the host's docker0.)
    d = Path(tempfile.mkdtemp(prefix="shoal-it-engine-", dir="/tmp"))
    sock, pidfile = d / "docker.sock", d / "docker.pid"
    bridge = "shoalit" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.213.77.1/24", "dev", bridge], check=True)
    env = dict(os.environ,
               DOCKER_HOST=f"unix://{sock}",
               SHOAL_DOCKERD_PIDFILE=str(pidfile),
               SHOAL_DOCKERD_LOG=str(d / "dockerd.log"),
               SHOAL_DOCKERD_ARGS=f"--data-root {d}/root --exec-root {d}/exec -H unix://{sock} "
                                  f"--bridge {bridge} --iptables=false --ip-masq=false")
    refused = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=60,
                             env=dict(env, SHOAL_DOCKERD_ARGS=f"-H unix://{sock} --bridge none"))
    assert refused.returncode == 2 and "refusing" in refused.stderr
    try:
        res = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr + (d / "dockerd.log").read_text(errors="replace")
        assert "starting dockerd" in res.stderr
        info = subprocess.run(["docker", "info", "-f", "{{.DockerRootDir}}"], capture_output=True,
                              text=True, env=env, check=True)
        assert info.stdout.strip() == f"{d}/root"
        again = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, env=env, timeout=60)
        assert again.returncode == 0 and "nothing to do" in again.stderr
    finally:
        if pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                    for _ in range(100):
                        os.kill(pid, 0)
                        time.sleep(0.1)
                except ProcessLookupError:
                    pass
        subprocess.run(["umount", "-R", f"{d}/exec"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        # the shared engine's bridge is untouched
        assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
