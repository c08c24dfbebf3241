"""A WSGI app with a /metrics view that relays the master's endpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gunicorn_prom_ext.relay import relay_scrape
from gunicorn_prom_ext.sources import load_settings

SETTINGS = load_settings().settings


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/metrics":
        headers = {
            "Authorization": environ.get("HTTP_AUTHORIZATION"),
            "Accept": environ.get("HTTP_ACCEPT"),
            "Accept-Encoding": environ.get("HTTP_ACCEPT_ENCODING"),
        }
        status, reply, body = relay_scrape(
            SETTINGS, {k: v for k, v in headers.items() if v is not None}
        )
        start_response(f"{status} -", [*reply, ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
