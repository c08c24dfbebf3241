"""The WSGI app of the smoke set (tests/test_smoke.py); smoke_asgi.py answers the same way.

Paths: ``/items/<n>`` (200, route ``/items/<n>``), ``/status/<code>`` (that status, no route),
``/echo`` (the request body back, route ``/echo``), ``/sleep/<seconds>`` (200 after a
``time.sleep``, route ``/sleep/<s>``: cooperative when gevent or eventlet patched ``time``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

# How an app names the route template that served a request (read by gunicorn_prom_ext).
ROUTE_KEY = "gunicorn_prom_ext.route"

StartResponse = Callable[..., Any]


def route_and_response(method: str, path: str, body: bytes) -> tuple[str | None, int, bytes]:
    """(route template or None, status, body) for a request; shared with smoke_asgi."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "items":
        return "/items/<n>", 200, f"item {parts[1]}".encode()
    if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
        code = int(parts[1])
        return None, code, b"" if code in (204, 304) else f"status {code}".encode()
    if path == "/echo" and method == "POST":
        return "/echo", 200, body
    if len(parts) == 2 and parts[0] == "sleep":
        return "/sleep/<s>", 200, b"slept"
    return None, 404, b"not found"


def sleep_seconds(path: str) -> float:
    parts = path.strip("/").split("/")
    return float(parts[1]) if len(parts) == 2 and parts[0] == "sleep" else 0.0


def status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method: str = environ["REQUEST_METHOD"]
    path: str = environ.get("PATH_INFO", "/")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
    route, code, out = route_and_response(method, path, body)
    if route is not None:
        environ[ROUTE_KEY] = route
    seconds = sleep_seconds(path)
    if seconds:
        time.sleep(seconds)
    start_response(
        status_line(code), [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))]
    )
    return [out]
