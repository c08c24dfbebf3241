"""One request to the metrics port: its head read (bounded), its path answered.

Paths: ``/metrics`` (auth as configured; ``?name[]=`` filters as prometheus_client's own
server does), ``/healthz`` (no auth, no data: 200 while the master serves) and ``/`` (a
pointer to both); anything else 404, any method but GET and HEAD 405.
"""

from __future__ import annotations

import contextlib
import http.client
import io
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .endpoint import MetricsEndpoint
    from .http_server import Connection

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
# A name[] filter longer than this is not a list of metric names anyone needs.
MAX_FILTER_NAMES = 256
INDEX_PAGE = b"gunicorn-prom-ext: metrics at /metrics, health at /healthz\n"
# A scraper's request head is a few hundred bytes (a few KiB with a long token). Without a
# bound of its own, http.server takes 100 header lines of 64 KiB each: a few dozen
# connections sending that made the master hold over half a GB, long after they left.
MAX_HEAD_BYTES = 64 << 10


class SourceUnavailable(Exception):
    """Raised by a collector whose source is down (Redis for the sidecar): answers 503."""


class RequestHandler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0): parse its head, answer, close."""

    server_version = "gunicorn-prom-ext"
    sys_version = ""

    def __init__(self, connection: Connection, endpoint: MetricsEndpoint) -> None:
        self._connection = connection
        self.endpoint = endpoint
        super().__init__(connection.sock, connection.address, None)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = _HeadReader(self.connection.makefile("rb", -1), MAX_HEAD_BYTES)
        # Buffered: a raw socket file may write only part of a large page.
        self.wfile = self.connection.makefile("wb", 1 << 16)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self._connection.answering()
        # Answering here covers every method, not only those with a do_* method.
        if self.command in ("GET", "HEAD"):
            return True
        self._reply(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        return False

    def do_GET(self) -> None:
        endpoint = self.endpoint
        url = urlsplit(self.path)
        if url.path == HEALTH_PATH:
            self._reply(200, b"ok\n")
            return
        if url.path == "/":
            self._reply(200, INDEX_PAGE)
            return
        if url.path != METRICS_PATH:
            self._reply(404, b"Not Found: metrics are at /metrics\n")
            return
        if not endpoint.authorized(self.headers.get("Authorization")):
            challenges = [("WWW-Authenticate", c) for c in endpoint.challenges()]
            self._reply(401, b"Unauthorized\n", challenges)
            return
        try:
            names = parse_qs(url.query, max_num_fields=MAX_FILTER_NAMES).get("name[]", [])
        except ValueError:
            self._reply(400, f"Bad Request: at most {MAX_FILTER_NAMES} name[] filters\n".encode())
            return
        try:
            body, headers = endpoint.render(
                self.headers.get("Accept", ""), self.headers.get("Accept-Encoding", ""), names
            )
        except SourceUnavailable as exc:
            # The collector has logged it (once per outage): say so, without a traceback.
            self._reply(503, f"{exc}\n".encode())
            return
        except Exception as exc:
            endpoint.scrape_failed(exc)
            self._reply(500, b"Error while collecting metrics\n")
            return
        self._reply(200, body, headers)

    do_HEAD = do_GET

    def _reply(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        headers = list(headers)
        self.send_response(status)
        if not any(name == "Content-Type" for name, _ in headers):
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds must not flood gunicorn's error log


class _HeadReader(io.BufferedIOBase):
    """The connection's reader, for a request head of at most ``limit`` bytes: past it,
    http.server's own "line too long" (431 for a header, a close for the request line)."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        super().__init__()
        self._raw = raw
        self._left = limit

    def readline(self, size: int | None = -1) -> bytes:
        if self._left <= 0:
            raise http.client.LineTooLong(f"request head over {MAX_HEAD_BYTES} bytes")
        size = self._left if size is None or size < 0 else min(size, self._left)
        line = self._raw.readline(size)
        self._left -= len(line)
        return line

    def close(self) -> None:
        self._raw.close()
        super().close()
