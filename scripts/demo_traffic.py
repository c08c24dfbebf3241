"""Helpers of scripts/demo.sh: wait for a URL, send an example app some traffic, build a
Prometheus query link. Loopback only: the demo never sends a request anywhere else.

    demo_traffic.py wait URL [--timeout S] [--pid PID]
    demo_traffic.py drive APP_URL --profile wsgi|django|flask [--requests N] [--seconds S]
        [--concurrency C]
    demo_traffic.py link PROMETHEUS_URL EXPR
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import os
import random
import socket
import sys
import threading
import time
import urllib.parse

# (method, path, body) per app; repeated entries come up more often.
PROFILES: dict[str, list[tuple[str, str, bytes | None]]] = {
    "wsgi": [
        ("GET", "/", None),
        *[("GET", f"/items/{n}", None) for n in (1, 7, 42, 99)] * 3,
        ("GET", "/items/0", None),
        ("POST", "/items", b'{"name": "new item"}' * 20),
        ("GET", "/slow?seconds=0.7", None),
        ("GET", "/fail", None),
        ("GET", "/no/such/page", None),
    ],
    "django": [
        ("GET", "/", None),
        *[("GET", f"/items/{n}", None) for n in (1, 2, 3)] * 3,
        ("GET", "/items/99", None),
        ("GET", "/boom", None),
        ("GET", "/no/such/page", None),
    ],
    "flask": [
        ("GET", "/", None),
        *[("GET", f"/catalog/items/{n}", None) for n in (1, 7, 42)] * 3,
        ("GET", "/catalog/fail", None),
        ("GET", "/no/such/page", None),
    ],
}


def loopback(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        is_loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if parts.scheme != "http" or not is_loopback:
        raise SystemExit(f"demo_traffic: {url}: only http:// on a loopback address")
    return parts


def get(url: str, timeout: float = 2.0) -> int:
    parts = loopback(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait(url: str, timeout: float, pid: int | None) -> int:
    """0 once ``url`` answers 200; 1 after ``timeout`` or when process ``pid`` is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            return 1
        try:
            if get(url) == 200:
                return 0
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    return 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drive(app_url: str, profile: str, requests: int, seconds: float, concurrency: int = 1) -> int:
    """``requests`` requests spread over ``seconds``, drawn from the app's profile, by
    ``concurrency`` clients at once."""
    parts = loopback(app_url)
    per_client = max(requests // max(concurrency, 1), 1)
    pause = seconds / per_client

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_client):
            method, path, body = rng.choice(PROFILES[profile])
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
            try:
                conn.request(method, path, body=body)
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass  # the demo is stopping, or the app restarts: not the demo's concern
            finally:
                conn.close()
            time.sleep(pause)

    threads = [threading.Thread(target=client, args=(42 + n,), daemon=True)
               for n in range(max(concurrency, 1))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


def link(prometheus_url: str, expr: str) -> str:
    """A Prometheus graph link for ``expr``, its metric names in the configured namespace."""
    from gunicorn_prom_ext.kit.names import name_map
    from gunicorn_prom_ext.kit.promql import rename_metrics
    from gunicorn_prom_ext.settings import ConfigError
    from gunicorn_prom_ext.sources import load_settings

    try:
        namespace = load_settings().settings.namespace
    except ConfigError:
        namespace = ""  # the app would not have started: the link hardly matters
    expr = rename_metrics(expr, name_map(namespace))
    query = urllib.parse.urlencode(
        {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "15m"}, quote_via=urllib.parse.quote
    )
    return f"{prometheus_url.rstrip('/')}/graph?{query}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="helpers of scripts/demo.sh")
    commands = parser.add_subparsers(dest="command", required=True)
    waiting = commands.add_parser("wait")
    waiting.add_argument("url")
    waiting.add_argument("--timeout", type=float, default=60.0)
    waiting.add_argument("--pid", type=int)
    driving = commands.add_parser("drive")
    driving.add_argument("app_url")
    driving.add_argument("--profile", choices=sorted(PROFILES), default="wsgi")
    driving.add_argument("--requests", type=int, default=60)
    driving.add_argument("--seconds", type=float, default=10.0)
    driving.add_argument("--concurrency", type=int, default=1)
    linking = commands.add_parser("link")
    linking.add_argument("prometheus_url")
    linking.add_argument("expr")
    args = parser.parse_args(argv)
    if args.command == "wait":
        return wait(args.url, args.timeout, args.pid)
    if args.command == "drive":
        return drive(args.app_url, args.profile, args.requests, args.seconds, args.concurrency)
    print(link(args.prometheus_url, args.expr))
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    try:
        raise SystemExit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C during the demo: stop quietly
        raise SystemExit(130) from None
