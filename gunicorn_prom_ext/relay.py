"""Serve the master's /metrics from inside the app (a framework's optional view).

The master's endpoint is the one place that has everything (the workers' files and the
master's own state), so a view in a worker asks it over loopback instead of assembling a
second, slightly different page. The client's Authorization header is passed through:
the master checks it, so the view is behind exactly the same auth settings.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping

from gunicorn_prom_ext.settings import Settings

_FORWARDED_REQUEST = ("Authorization", "Accept", "Accept-Encoding")
_FORWARDED_RESPONSE = ("Content-Type", "Content-Encoding", "WWW-Authenticate")

Reply = tuple[int, list[tuple[str, str]], bytes]


def master_address(settings: Settings) -> str:
    host = settings.bind_address
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def relay_scrape(
    settings: Settings, request_headers: Mapping[str, str], timeout: float = 10.0
) -> Reply:
    """(status, headers, body) of the master's /metrics for this request's headers."""
    host, port = master_address(settings), settings.metrics_port
    conn: http.client.HTTPConnection
    if settings.ssl_enabled:
        # Our own master on this host: the certificate names its public name, not
        # loopback, so it is not verified here.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {k: v for k in _FORWARDED_REQUEST if (v := request_headers.get(k)) is not None}
    try:
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        reply = [(k, v) for k in _FORWARDED_RESPONSE if (v := resp.getheader(k)) is not None]
        return resp.status, reply, body
    except (OSError, http.client.HTTPException) as exc:
        text = f"metrics endpoint of the gunicorn master not reachable: {exc}\n"
        return 503, [("Content-Type", "text/plain; charset=utf-8")], text.encode()
    finally:
        conn.close()
