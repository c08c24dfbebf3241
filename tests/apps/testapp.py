"""The WSGI app the end-to-end tests serve: each path exercises one response shape.

Dependency-free on purpose, so the core is tested without Django or Flask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

# How a framework adapter tells the core which route template served the request.
ROUTE_KEY = "gunicorn_prom_ext.route"


def _text(start_response: StartResponse, status: int, body: bytes) -> list[bytes]:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    start_response(
        f"{status} {reason}",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _raise_after(start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("testapp: failure after start_response, before the first chunk")
    yield b""  # unreachable; makes this a generator so the raise happens during iteration


def _raise_midstream(start_response: StartResponse) -> Iterator[bytes]:
    # No Content-Length: the first chunk goes out (headers sent) before the failure.
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    raise RuntimeError("testapp: failure in the middle of the body")


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path: str = environ.get("PATH_INFO", "/")
    parts = path.strip("/").split("/")

    if path == "/":
        return _text(start_response, 200, b"hello")
    if len(parts) == 2 and parts[0] == "items":
        environ[ROUTE_KEY] = "/items/<n>"
        return _text(start_response, 200, f"item {parts[1]}".encode())
    if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
        code = int(parts[1])
        # These statuses must not carry a body.
        empty = code in (204, 304) or code < 200
        return _text(start_response, code, b"" if empty else f"status {code}".encode())
    if path == "/raise-before":
        raise RuntimeError("testapp: failure before start_response")
    if path == "/raise-after":
        return _raise_after(start_response)
    if path == "/raise-midstream":
        return _raise_midstream(start_response)
    if len(parts) == 2 and parts[0] == "sleep":
        time.sleep(float(parts[1]))
        return _text(start_response, 200, b"slept")
    if path == "/no-start-response":
        return []  # a broken app: it never calls start_response
    if len(parts) >= 2 and parts[0] == "misroute":
        # A misbehaving adapter: the raw path as the route (or a hostile value).
        hostile: dict[str, object] = {"int": 42, "huge": "/x" * 5000, "surrogate": "/\udcff",
                                      "none": None, "list": ["/a"]}  # fmt: skip
        environ[ROUTE_KEY] = hostile.get(parts[1], path)
        return _text(start_response, 200, b"misrouted")
    if len(parts) == 2 and parts[0] == "mangle-length":
        # An app (or middleware) leaving something odd in CONTENT_LENGTH.
        lengths: dict[str, object] = {"list": ["5"], "bytes": b"5", "int": 5,
                                      "arabic": "\u0665", "huge": "9" * 400}  # fmt: skip
        environ["CONTENT_LENGTH"] = lengths[parts[1]]
        return _text(start_response, 200, b"mangled")
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
        return _text(start_response, 200, data)
    return _text(start_response, 404, b"not found")
