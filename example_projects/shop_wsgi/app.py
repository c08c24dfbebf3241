"""A plain WSGI shop with a few routes, so a dashboard has labels to show.

No framework: the app names the matched route template itself, in the WSGI environ under
``gunicorn_prom_ext.route``, as a framework adapter would. ``bash scripts/demo.sh`` serves it.

    GET  /             200, a short index
    GET  /items/<id>   200 with the item as JSON (ids 1 to 99), else 404 under the same route
    POST /items        201, answers with the size of the body it got
    GET  /slow         200 after ?seconds= (default 0.6, at most 5): slower than the objective
    GET  /fail         the view raises: gunicorn answers 500
    anything else      404, no route
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]
ROUTE_KEY = "gunicorn_prom_ext.route"
MAX_SLOW_SECONDS = 5.0


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        environ[ROUTE_KEY] = "/"
        return _text(start_response, "200 OK", "shop: try /items/42, /slow, /fail\n")
    if path.startswith("/items/") and method == "GET":
        environ[ROUTE_KEY] = "/items/<id>"
        item_id = path[len("/items/") :]
        if item_id.isdigit() and 1 <= int(item_id) <= 99:
            return _json(start_response, "200 OK", {"id": int(item_id), "name": f"item {item_id}"})
        return _json(start_response, "404 Not Found", {"error": "no such item"})
    if path == "/items" and method == "POST":
        environ[ROUTE_KEY] = "/items"
        body = _read_body(environ)
        return _json(start_response, "201 Created", {"received_bytes": len(body)})
    if path == "/slow":
        environ[ROUTE_KEY] = "/slow"
        time.sleep(_seconds(environ.get("QUERY_STRING", "")))
        return _text(start_response, "200 OK", "done, slowly\n")
    if path == "/fail":
        environ[ROUTE_KEY] = "/fail"
        raise RuntimeError("this view always fails (the client gets gunicorn's 500)")
    return _text(start_response, "404 Not Found", "not found\n")


def _seconds(query: str) -> float:
    try:
        wanted = float(parse_qs(query).get("seconds", ["0.6"])[0])
    except ValueError:
        wanted = 0.6
    return min(max(wanted, 0.0), MAX_SLOW_SECONDS) if wanted == wanted else 0.6  # NaN


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    return stream.read(length) if length > 0 else b""


def _text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _json(start_response: StartResponse, status: str, value: object) -> list[bytes]:
    body = json.dumps(value).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]
