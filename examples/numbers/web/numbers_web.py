#!/usr/bin/env python3
"""numbers-web: Shoal's stand-in for the book's diamol/ch08-numbers-web and
diamol/ch14-numbers-web, standard library only.

GET /        an HTML page showing a random number fetched from the API at
             env RngApi__Url (default http://numbers-api/rng), or
             "RNG service unavailable!" when the API fails
GET /rng     the API's number as plain text (502 when the API fails) -- handy
             for scripts
GET /health  200 "OK" (the web app itself is up)
"""
import html
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "latest")


def api_url():
    for k, v in os.environ.items():
        if k.lower() in ("rngapi__url", "rngapi:url") and v:
            return v
    return "http://numbers-api/rng"


def log(msg):
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print("%s numbers-web: %s" % (stamp, msg), flush=True)


def fetch_number():
    """(number or None, detail, api hostname)"""
    url = api_url()
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode("utf-8", "replace").strip(), "", resp.headers.get("X-Hostname", "")
    except urllib.error.HTTPError as exc:
        return None, "HTTP %d from %s" % (exc.code, url), exc.headers.get("X-Hostname", "")
    except Exception as exc:
        return None, "%s: %s" % (url, exc), ""


PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Random Number Generator</title>
<style>body{{font-family:system-ui,sans-serif;background:#f4f6f8;margin:0}}main{{max-width:36em;margin:3em auto;
background:#fff;padding:1.5em 2em;border-radius:6px;box-shadow:0 1px 3px #0002;text-align:center}}
.n{{font-size:4em;color:#2b5797;margin:.3em}}.err{{color:#c0392b;font-size:1.4em}}.muted{{color:#777;font-size:.85em}}
a.b{{display:inline-block;padding:.5em 1.5em;background:#2b5797;color:#fff;border-radius:4px;text-decoration:none}}</style>
</head><body><main><h1>Random Number Generator</h1>{content}<p><a class="b" href="/">Go!</a></p>
<p class="muted">web {host} ({version}){api}</p></main></body></html>"""


class Handler(BaseHTTPRequestHandler):
    server_version = "ShoalNumbersWeb/" + VERSION
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    def send(self, status, text, ctype="text/plain; charset=utf-8"):
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-App-Version", VERSION)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/") or "/"
        if path == "/":
            number, detail, api_host = fetch_number()
            if number is not None:
                content = '<p>Here\'s your random number:</p><p class="n">%s</p>' % html.escape(number)
            else:
                log("API call failed: %s" % detail)
                content = '<p class="err">RNG service unavailable!</p><p class="muted">%s</p>' % html.escape(detail)
            api = ", api %s" % html.escape(api_host) if api_host else ""
            self.send(200, PAGE.format(content=content, host=html.escape(socket.gethostname()),
                                       version=html.escape(VERSION), api=api), "text/html; charset=utf-8")
        elif path == "/rng":
            number, detail, _ = fetch_number()
            if number is None:
                self.send(502, "RNG service unavailable: %s\n" % detail)
            else:
                self.send(200, number)
        elif path == "/health":
            self.send(200, "OK\n")
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
    log("version %s listening on :%d, API %s" % (VERSION, port, api_url()))
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
