#!/usr/bin/env python3
"""numbers-api: Shoal's stand-in for the book's diamol/ch08-numbers-api and
diamol/ch14-numbers-api (random number service), standard library only.

GET  /rng     a random number 0..100 as text (HTTP 500 once the service is broken)
GET  /health  200 "OK" while healthy, 500 once broken
POST /fail    break this instance (health and rng answer 500 from now on)
POST /reset   un-break it (clears the call counter too)
GET  /        JSON with hostname, version and state

It is broken when any of these holds:
  * env Broken is true (anything but empty/false/0/no) -- the ch14 v5 image
    sets Broken=true, and the book's v5.yml overrides it with Broken=false;
  * POST /fail was called;
  * env FailAfterCallCount=N > 0 and /rng has been called N times (the book's
    ch08 "fails after 3 calls" bug: set FailAfterCallCount=3 to get it; the
    images leave it at 0 = never, so rolling-update demos stay predictable).
"""
import json
import os
import random
import signal
import socket
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "latest")


def truthy(value):
    return (value or "").strip().lower() not in ("", "false", "0", "no", "off")


def env(name, default=""):
    # .NET-style config: Broken, broken, Rng__FailAfterCallCount ...
    for k, v in os.environ.items():
        if k.lower() == name.lower() or k.lower().replace("__", ":") == name.lower():
            return v
    return default


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.failed = False
        try:
            self.fail_after = int(env("FailAfterCallCount", "0") or 0)
        except ValueError:
            self.fail_after = 0

    def broken(self):
        if truthy(env("Broken")):
            return "env Broken=%s" % env("Broken")
        if self.failed:
            return "failed (POST /fail)"
        if self.fail_after > 0 and self.calls >= self.fail_after:
            return "failed after %d calls" % self.calls
        return None


STATE = State()


def log(msg):
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print("%s numbers-api: %s" % (stamp, msg), flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "ShoalNumbersApi/" + VERSION
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    def send(self, status, text, ctype="text/plain; charset=utf-8"):
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App-Version", VERSION)
        self.send_header("X-Hostname", socket.gethostname())
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/") or "/"
        if path == "/rng":
            with STATE.lock:
                reason = STATE.broken()
                if not reason:
                    STATE.calls += 1
            if reason:
                self.send(500, "RNG service failure: %s\n" % reason)
            else:
                self.send(200, str(random.randint(0, 100)))
        elif path == "/health":
            with STATE.lock:
                reason = STATE.broken()
            if reason:
                self.send(500, "Unhealthy: %s\n" % reason)
            else:
                self.send(200, "OK\n")
        elif path == "/":
            with STATE.lock:
                info = {"service": "numbers-api", "version": VERSION,
                        "hostname": socket.gethostname(), "calls": STATE.calls,
                        "broken": STATE.broken()}
            self.send(200, json.dumps(info) + "\n", "application/json")
        else:
            self.send(404, "Not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0].rstrip("/")
        if path == "/fail":
            with STATE.lock:
                STATE.failed = True
            log("told to fail")
            self.send(200, "Failed: /health and /rng now answer 500\n")
        elif path == "/reset":
            with STATE.lock:
                STATE.failed = False
                STATE.calls = 0
            self.send(200, "Reset\n")
        else:
            self.send(404, "Not found\n")


def main():
    def stop(signum, _frame):
        log("signal %d: exiting" % signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = int(os.environ.get("PORT", "80"))
    server = ThreadingHTTPServer(("", port), Handler)
    server.daemon_threads = True
    log("version %s listening on :%d (Broken=%r, FailAfterCallCount=%d)"
        % (VERSION, port, env("Broken"), STATE.fail_after))
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
