#!/usr/bin/env python3
"""A to-do list web app: Shoal's stand-in for the book's `diamol/ch06-todo-list`.

Standard library only (http.server, threaded) plus Debian's python3-psycopg2
for Postgres.  Behaves like the book's .NET app:

* listens on port 80 (env ``PORT`` overrides);
* configuration, later sources override earlier ones, nested JSON keys are
  flattened with ``:`` and looked up case-insensitively (as .NET does):
    1. ``/app/config/config.json``
    2. ``/app/secrets/secrets.json`` (where the book's Windows stacks put it)
    3. ``/app/config/secrets.json``
    4. environment variables whose names contain ``:`` or ``__``
       (``Database__Provider=Postgres`` means ``Database:Provider``);
  any file may be missing;
* ``Database:Provider`` = ``Sqlite`` (default, ``/data/todo-list.db``) or
  ``Postgres`` with ``ConnectionStrings:ToDoDb`` =
  ``Server=…;Port=…;Database=…;User Id=…;Password=…;``;
* pages ``/``, ``/list``, ``/new`` (GET form, POST adds and redirects to
  ``/list``), ``/diagnostics`` (hostname, provider, database state) and
  ``/health``;
* when the database cannot be reached every data page answers HTTP 500 with
  an error page; the connection is retried on each request (and a few times
  in the background at start); the database and table are created if missing;
* exits promptly on SIGTERM/SIGINT.
"""
from __future__ import annotations

import html
import json
import os
import platform
import signal
import socket
import sqlite3
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP_VERSION = "1.0"
CONFIG_FILES = [
    "/app/config/config.json",
    "/app/secrets/secrets.json",
    "/app/config/secrets.json",
]
SQLITE_PATH = os.environ.get("TODO_SQLITE_PATH", "/data/todo-list.db")
CONNECT_TIMEOUT = 3  # seconds, Postgres connect timeout


def log(msg: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} todo-app: {msg}", flush=True)


# --------------------------------------------------------------------------- config
def flatten(value, prefix: str = "", out: dict | None = None) -> dict:
    """{"A": {"B": 1}} -> {"a:b": "1"} (keys lower-cased; .NET config is case-insensitive)."""
    if out is None:
        out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{prefix}:{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            flatten(v, f"{prefix}:{i}" if prefix else str(i), out)
    else:
        if isinstance(value, bool):
            value = "true" if value else "false"
        out[prefix.lower()] = "" if value is None else str(value)
    return out


def load_config(files=CONFIG_FILES, environ=os.environ) -> tuple[dict, list]:
    config: dict = {}
    sources = []
    for path in files:
        try:
            with open(path, encoding="utf-8-sig") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log(f"ignoring unreadable config file {path}: {exc}")
            continue
        flatten(data, "", config)
        sources.append(path)
    env_keys = []
    for name, value in environ.items():
        if ":" in name or "__" in name:
            config[name.replace("__", ":").lower()] = value
            env_keys.append(name)
    if env_keys:
        sources.append("environment")
    return config, sources


def parse_connection_string(conn: str) -> dict:
    """ADO.NET style 'Server=db;Database=todo;User Id=u;Password=p;' -> psycopg2 kwargs."""
    aliases = {
        "server": "host", "host": "host", "data source": "host",
        "port": "port",
        "database": "dbname", "initial catalog": "dbname",
        "user id": "user", "userid": "user", "user": "user", "username": "user",
        "user name": "user", "uid": "user",
        "password": "password", "pwd": "password",
    }
    out: dict = {}
    for part in conn.split(";"):
        if "=" not in part:
            continue
        key, _, value = part.partition("=")
        key = " ".join(key.strip().lower().split())
        if key in aliases:
            out[aliases[key]] = value.strip()
    # "Server=host:5433" or "Server=host,5433"
    host = out.get("host", "")
    for sep in (",", ":"):
        if sep in host and "port" not in out:
            h, _, p = host.rpartition(sep)
            if p.isdigit():
                out["host"], out["port"] = h, p
    return out


# --------------------------------------------------------------------------- storage
class DatabaseUnavailable(Exception):
    pass


class SqliteStore:
    provider = "Sqlite"

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()

    def describe(self) -> str:
        return self.path

    def _connect(self):
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS ToDos ("
                " ToDoId INTEGER PRIMARY KEY AUTOINCREMENT,"
                " Item TEXT NOT NULL,"
                " DateAdded TEXT NOT NULL)"
            )
            return conn
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseUnavailable(f"SQLite database {self.path}: {exc}") from exc

    def check(self) -> None:
        self._connect().close()

    def items(self) -> list:
        with self.lock:
            conn = self._connect()
            try:
                rows = conn.execute("SELECT ToDoId, Item, DateAdded FROM ToDos ORDER BY ToDoId").fetchall()
            except sqlite3.Error as exc:
                raise DatabaseUnavailable(str(exc)) from exc
            finally:
                conn.close()
        return rows

    def count(self) -> int:
        return len(self.items())

    def add(self, item: str) -> None:
        with self.lock:
            conn = self._connect()
            try:
                with conn:
                    conn.execute(
                        "INSERT INTO ToDos (Item, DateAdded) VALUES (?, ?)",
                        (item, datetime.now(timezone.utc).isoformat(timespec="seconds")),
                    )
            except sqlite3.Error as exc:
                raise DatabaseUnavailable(str(exc)) from exc
            finally:
                conn.close()


class PostgresStore:
    provider = "Postgres"

    def __init__(self, conn_string: str):
        self.params = parse_connection_string(conn_string or "")
        self.ready = False  # database + table known to exist
        self.lock = threading.Lock()

    def describe(self) -> str:
        p = self.params
        if not p.get("host"):
            return "(no connection string)"
        return f"{p.get('host')}:{p.get('port', '5432')}/{p.get('dbname', 'postgres')} as {p.get('user', '?')}"

    def _raw_connect(self, dbname: str):
        import psycopg2  # imported lazily: SQLite-only use needs no driver

        kwargs = dict(self.params)
        kwargs["dbname"] = dbname
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
        return psycopg2.connect(**kwargs)

    def _connect(self):
        if not self.params.get("host"):
            raise DatabaseUnavailable(
                "no connection string: set ConnectionStrings:ToDoDb (e.g. in /app/config/secrets.json)"
            )
        try:
            import psycopg2
        except ImportError as exc:  # pragma: no cover - the image ships it
            raise DatabaseUnavailable(f"Postgres driver missing: {exc}") from exc
        dbname = self.params.get("dbname") or "postgres"
        try:
            try:
                conn = self._raw_connect(dbname)
            except psycopg2.OperationalError as exc:
                if "does not exist" not in str(exc) or dbname == "postgres":
                    raise
                self._create_database(dbname)
                conn = self._raw_connect(dbname)
            if not self.ready:
                try:
                    with self.lock, conn, conn.cursor() as cur:
                        cur.execute(
                            'CREATE TABLE IF NOT EXISTS "ToDos" ('
                            ' "ToDoId" SERIAL PRIMARY KEY,'
                            ' "Item" TEXT NOT NULL,'
                            ' "DateAdded" TIMESTAMPTZ NOT NULL DEFAULT now())'
                        )
                except (psycopg2.errors.UniqueViolation, psycopg2.errors.DuplicateTable):
                    pass  # another replica created it at the same moment
                except Exception:
                    conn.close()
                    raise
                self.ready = True
            return conn
        except psycopg2.Error as exc:
            self.ready = False
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"Postgres at {self.describe()}: {msg}") from exc

    def _create_database(self, dbname: str) -> None:
        import psycopg2
        from psycopg2 import sql

        log(f"creating database {dbname!r}")
        admin = self._raw_connect("postgres")
        try:
            admin.autocommit = True
            with admin.cursor() as cur:
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                except psycopg2.errors.DuplicateDatabase:
                    pass
        finally:
            admin.close()

    def check(self) -> None:
        self._connect().close()

    def _query(self, statement: str, args=(), fetch=True):
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement, args)
                return cur.fetchall() if fetch else None
        except Exception as exc:  # psycopg2.Error, connection dropped mid-query
            self.ready = False
            raise DatabaseUnavailable(f"Postgres at {self.describe()}: {exc}") from exc
        finally:
            conn.close()

    def items(self) -> list:
        rows = self._query('SELECT "ToDoId", "Item", "DateAdded" FROM "ToDos" ORDER BY "ToDoId"')
        return [(r[0], r[1], r[2].isoformat(timespec="seconds")) for r in rows]

    def count(self) -> int:
        return self._query('SELECT count(*) FROM "ToDos"')[0][0]

    def add(self, item: str) -> None:
        self._query('INSERT INTO "ToDos" ("Item") VALUES (%s)', (item,), fetch=False)


def make_store(config: dict):
    provider = config.get("database:provider", "Sqlite").strip()
    if provider.lower() in ("postgres", "postgresql", "npgsql"):
        return PostgresStore(config.get("connectionstrings:tododb", ""))
    if provider.lower() not in ("sqlite", ""):
        log(f"unknown Database:Provider {provider!r}; using Sqlite")
    return SqliteStore(SQLITE_PATH)


# --------------------------------------------------------------------------- HTML
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f6f8;color:#222}
header{background:#2b5797;color:#fff;padding:.8em 1.5em}
header a{color:#fff;margin-right:1.2em;text-decoration:none;font-weight:600}
header .brand{font-size:1.2em;margin-right:2em}
main{max-width:46em;margin:1.5em auto;background:#fff;padding:1.2em 1.8em;border-radius:6px;box-shadow:0 1px 3px #0002}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.45em .6em;border-bottom:1px solid #ddd}
th{background:#eef2f7}input[type=text]{width:70%;padding:.4em;font-size:1em}
button{padding:.45em 1.2em;font-size:1em;background:#2b5797;color:#fff;border:0;border-radius:4px;cursor:pointer}
.error{border-left:5px solid #c0392b;padding-left:1em}.muted{color:#777;font-size:.85em}
dt{font-weight:600;margin-top:.5em}dd{margin-left:1em;font-family:monospace}
"""


def page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)} - To-Do List</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<style>{STYLE}</style></head><body>"
        "<header><a class=\"brand\" href=\"/\">To-Do List</a>"
        "<a href=\"/list\">List</a><a href=\"/new\">Add</a><a href=\"/diagnostics\">Diagnostics</a></header>"
        f"<main>{body}</main>"
        f"<main class=\"muted\">Served by {html.escape(socket.gethostname())}</main>"
        "</body></html>"
    ).encode("utf-8")


# --------------------------------------------------------------------------- HTTP
class App:
    def __init__(self, config: dict, sources: list):
        self.config = config
        self.sources = sources
        self.store = make_store(config)
        self.started = datetime.now(timezone.utc)


class Handler(BaseHTTPRequestHandler):
    server_version = "ShoalToDo/" + APP_VERSION
    protocol_version = "HTTP/1.1"
    app: App  # set on the class before serving

    def log_message(self, fmt, *args):  # one line per request on stdout
        log(f"{self.address_string()} {fmt % args}")

    def send(self, status: int, body: bytes, ctype="text/html; charset=utf-8", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def db_error(self, exc: Exception):
        log(f"database error: {exc}")
        body = (
            "<div class=\"error\"><h1>Error</h1>"
            "<p><strong>The database cannot be reached.</strong></p>"
            f"<p>Provider: {html.escape(self.app.store.provider)} &mdash; "
            f"{html.escape(self.app.store.describe())}</p>"
            f"<p class=\"muted\">{html.escape(str(exc))}</p>"
            "<p>The app tries again on every request: reload the page when the database is up.</p></div>"
        )
        self.send(500, page("Error", body))

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        try:
            if path == "/":
                n = self.app.store.count()
                # The book's wording, whatever N is.
                body = (
                    f"<h1>You have {n} items to do.</h1>"
                    "<p><a href=\"/list\">See the list</a> &middot; <a href=\"/new\">Add an item</a></p>"
                )
                self.send(200, page("Home", body))
            elif path == "/list":
                rows = self.app.store.items()
                trs = "".join(
                    f"<tr><td>{i}</td><td>{html.escape(item)}</td><td>{html.escape(str(added))}</td></tr>"
                    for i, item, added in rows
                )
                body = (
                    "<h1>To-do items</h1>"
                    + (
                        "<table><thead><tr><th>#</th><th>Item</th><th>Added</th></tr></thead>"
                        f"<tbody>{trs}</tbody></table>"
                        if rows
                        else "<p>Nothing to do.</p>"
                    )
                    + "<p><a href=\"/new\">Add an item</a></p>"
                )
                self.send(200, page("List", body))
            elif path == "/new":
                body = (
                    "<h1>New item</h1><form method=\"post\" action=\"/new\">"
                    "<input type=\"text\" name=\"item\" placeholder=\"What needs doing?\" autofocus required> "
                    "<button type=\"submit\">Add</button></form>"
                )
                self.send(200, page("New", body))
            elif path == "/diagnostics":
                self.diagnostics()
            elif path == "/health":
                self.app.store.check()
                self.send(200, b"OK\n", "text/plain; charset=utf-8")
            else:
                self.send(404, page("Not found", "<h1>Not found</h1><p><a href=\"/\">Home</a></p>"))
        except DatabaseUnavailable as exc:
            self.db_error(exc)

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path != "/new":
            self.send(404, page("Not found", "<h1>Not found</h1>"))
            return
        ctype = self.headers.get("Content-Type", "")
        item = ""
        if ctype.startswith("application/json"):
            try:
                item = str(json.loads(raw or b"{}").get("item", ""))
            except (ValueError, AttributeError):
                item = ""
        else:
            fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
            item = (fields.get("item") or fields.get("Item") or [""])[0]
        item = item.strip()
        if not item:
            self.send(400, page("New", "<h1>New item</h1><p class=\"error\">Please enter an item.</p>"
                                       "<p><a href=\"/new\">Back</a></p>"))
            return
        try:
            self.app.store.add(item[:500])
        except DatabaseUnavailable as exc:
            self.db_error(exc)
            return
        self.send(303, b"", headers={"Location": "/list"})

    def diagnostics(self):
        store = self.app.store
        try:
            store.check()
            db_state = "connected"
        except DatabaseUnavailable as exc:
            db_state = f"unavailable: {exc}"
        rows = [
            ("Hostname", socket.gethostname()),
            ("Database provider", store.provider),
            ("Database", store.describe()),
            ("Database state", db_state),
            ("Config sources", ", ".join(self.app.sources) or "(defaults)"),
            ("App version", APP_VERSION),
            ("Runtime", f"Python {platform.python_version()} on {platform.system()} {platform.release()}"),
            ("Process", f"pid {os.getpid()}, started {self.app.started.isoformat(timespec='seconds')}"),
        ]
        dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows)
        self.send(200, page("Diagnostics", f"<h1>Diagnostics</h1><dl>{dl}</dl>"))


def warm_up(store, attempts: int = 5, delay: float = 2.0) -> None:
    for i in range(1, attempts + 1):
        try:
            store.check()
            log(f"database ready ({store.provider}: {store.describe()})")
            return
        except DatabaseUnavailable as exc:
            log(f"database not ready (attempt {i}/{attempts}): {exc}")
            if i < attempts:
                time.sleep(delay)


def main() -> int:
    config, sources = load_config()
    app = App(config, sources)
    Handler.app = app
    port = int(os.environ.get("PORT", "80"))
    server = ThreadingHTTPServer(("", port), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        log(f"signal {signum}: exiting")
        # Daemon threads die with the process; nothing to flush (SQLite commits per request).
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"provider {app.store.provider} ({app.store.describe()}); config from "
        f"{', '.join(sources) or 'defaults'}; listening on :{port}")
    threading.Thread(target=warm_up, args=(app.store,), daemon=True).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
