"""The ``/metrics`` HTTP(S) endpoint, served from a background thread of the gunicorn master.

The master forks workers while this thread runs, so every worker inherits the listening
socket; a worker must call ``close_inherited_socket()`` or the port stays taken after the
master stops (and a USR2 successor can never bind it).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hmac
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted

from .log import Log
from .settings import Settings

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

METRICS_PATH = "/metrics"
# Bounds how long a slow or silent client (or a stalled TLS handshake) holds its thread.
CONNECTION_TIMEOUT = 10.0
# Fallback wake-up of the accept loop when stop() cannot interrupt it directly.
POLL_INTERVAL = 0.5
GZIP_LEVEL = 6  # level 9 costs about 5x the CPU for a ~7 % smaller body
# Distinct scrape errors remembered for log de-duplication; bounded so that messages
# carrying varying details cannot grow memory without limit.
MAX_REMEMBERED_ERRORS = 64


class SourceUnavailable(Exception):
    """Raised by a collector whose source is down (Redis for the sidecar): answers 503."""


class MetricsEndpoint:
    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        log: Log,
        *,
        retry_interval: float = 2.0,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._log = log
        self._retry_interval = retry_interval
        self._on_fault = on_fault
        self._expected_basic = _basic_credentials(settings)
        self._expected_token = (
            settings.auth_token.encode() if settings.auth_token is not None else None
        )
        self._stopping = threading.Event()
        # Guards the hand-over of _server between the serving thread and stop().
        self._lock = threading.Lock()
        self._server: _Server | None = None
        # Set before bind() so a fork at any moment finds every listening socket;
        # read without the lock because a forked child may inherit the lock held.
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._url: str | None = None
        self._errors_lock = threading.Lock()
        self._logged_errors: set[str] = set()

    @property
    def url(self) -> str | None:
        return self._url

    def start(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        self._owner_pid = os.getpid()
        # The first attempt is made here, in the caller's thread: gunicorn forks its first
        # workers right after when_ready, and a socket created by the background thread
        # while a fork is under way could be copied into a worker before it is recorded.
        server = self._try_bind(failing=False)
        self._thread = threading.Thread(
            target=self._run, args=(server,), name="gunicorn-prom-ext-metrics", daemon=True
        )
        self._thread.start()

    def close_inherited_socket(self) -> None:
        # close(), never shutdown(): the kernel socket is shared with the master, and
        # shutdown() would stop it listening there too.
        sock = self._listener
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.close()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self._stop(timeout)
        except Exception:
            self._log.exception("metrics endpoint: error while stopping")

    def _stop(self, timeout: float) -> None:
        self._stopping.set()
        if os.getpid() != self._owner_pid:
            # A forked copy has no serving thread; shutdown() would wait for it forever.
            self.close_inherited_socket()
            return
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            # On Linux this stops the shared socket listening in every process, so even a
            # child that leaked its copy cannot keep a successor (SO_REUSEADDR) off the port,
            # and it wakes the accept loop at once instead of after POLL_INTERVAL.
            with contextlib.suppress(OSError):
                server.socket.shutdown(socket.SHUT_RD)
            server.shutdown()  # returns: _run always enters serve_forever once _server is set
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._url = None

    # -- serving thread -------------------------------------------------------------

    def _run(self, server: _Server | None) -> None:
        try:
            if server is None:
                server = self._bind_with_retry()
            if server is None:
                return
            with self._lock:
                if self._stopping.is_set():
                    server.server_close()
                    self._url = None
                    return
                self._server = server
            server.serve_forever(POLL_INTERVAL)
        except Exception:
            self._log.exception("metrics endpoint: serving thread failed")
            self._fault("endpoint_serve")

    def _bind_with_retry(self) -> _Server | None:
        # start() already failed once and said so; keep quiet until it works.
        while not self._stopping.wait(self._retry_interval):
            server = self._try_bind(failing=True)
            if server is not None:
                return server
        return None

    def _try_bind(self, *, failing: bool) -> _Server | None:
        s = self._settings
        try:
            server = self._bind()
        except Exception as exc:
            if not failing:
                self._log.warning(
                    "metrics endpoint: cannot listen on %s: %s; retrying every %gs"
                    " in the background",
                    _host_port(s.bind_address, s.metrics_port),
                    exc,
                    self._retry_interval,
                )
                self._fault("endpoint_bind")
            return None
        if failing:
            self._log.info("metrics endpoint: bound at last, serving %s", self._url)
        else:
            self._log.info("metrics endpoint: serving %s", self._url)
        return server

    def _bind(self) -> _Server:
        s = self._settings
        ssl_context = _server_ssl_context(s) if s.ssl_enabled else None
        family, _, _, _, address = socket.getaddrinfo(
            s.bind_address, s.metrics_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        server = _Server(address, family, self, ssl_context)
        self._listener = server.socket
        try:
            server.server_bind()
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
        port = server.server_address[1]
        scheme = "https" if ssl_context is not None else "http"
        self._url = f"{scheme}://{_host_port(s.bind_address, port)}{METRICS_PATH}"
        return server

    # -- used by request threads ------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if self._expected_basic is None and self._expected_token is None:
            return True
        scheme, _, credentials = (header or "").strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "basic" and self._expected_basic is not None:
            try:
                given = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(given, self._expected_basic)
        if scheme == "bearer" and self._expected_token is not None:
            return hmac.compare_digest(credentials.encode(), self._expected_token)
        return False

    def challenges(self) -> list[str]:
        out = []
        if self._expected_basic is not None:
            out.append('Basic realm="metrics", charset="UTF-8"')
        if self._expected_token is not None:
            out.append('Bearer realm="metrics"')
        return out

    def render(self, accept: str, accept_encoding: str) -> tuple[bytes, list[tuple[str, str]]]:
        """Return (body, headers); raises whatever the registry's collectors raise."""
        encoder, content_type = choose_encoder(accept)
        body = encoder(self._registry)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        return body, headers

    def scrape_failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._errors_lock:
            new = message not in self._logged_errors
            if new:
                if len(self._logged_errors) >= MAX_REMEMBERED_ERRORS:
                    self._logged_errors.clear()
                self._logged_errors.add(message)
        if new:
            self._log.exception("metrics endpoint: collecting metrics failed: %s", message)
        self._fault("scrape")

    def connection_failed(self, client_address: Any) -> None:
        self._log.debug(
            "metrics endpoint: connection from %s failed", client_address, exc_info=True
        )

    def _fault(self, kind: str) -> None:
        if self._on_fault is None:
            return
        try:
            self._on_fault(kind)
        except Exception:
            self._log.debug("metrics endpoint: on_fault(%r) failed", kind, exc_info=True)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # never SO_REUSEPORT: a USR2 successor must wait for the port
    daemon_threads = True
    block_on_close = False  # server_close() must not wait for slow clients

    def __init__(
        self,
        address: tuple[Any, ...],
        family: int,
        endpoint: MetricsEndpoint,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.address_family = family
        self.endpoint = endpoint
        self.ssl_context = ssl_context
        super().__init__(address, _Handler, bind_and_activate=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes, resets and timeouts are the client's business, not the master's.
        self.endpoint.connection_failed(client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CONNECTION_TIMEOUT
    server_version = "gunicorn-prom-ext"
    sys_version = ""

    def setup(self) -> None:
        context = self.server.ssl_context
        if context is not None:
            # Handshake here, in this connection's thread, so one slow client cannot
            # stall the accept loop; the timeout bounds the handshake too.
            self.request.settimeout(self.timeout)
            self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            # wrap_socket() detached the accepted socket, so the server cannot close it.
            if isinstance(self.request, ssl.SSLSocket):
                self.request.close()

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        if urlsplit(self.path).path != METRICS_PATH:
            self._reply(404, b"Not Found\n")
            return
        if not endpoint.authorized(self.headers.get("Authorization")):
            challenges = [("WWW-Authenticate", c) for c in endpoint.challenges()]
            self._reply(401, b"Unauthorized\n", challenges)
            return
        try:
            body, headers = endpoint.render(
                self.headers.get("Accept", ""), self.headers.get("Accept-Encoding", "")
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

    def parse_request(self) -> bool:
        # Answering here covers every method, not only those with a do_* method.
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            return True
        self._reply(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        return False

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


def _basic_credentials(settings: Settings) -> bytes | None:
    if settings.auth_username is None or settings.auth_password is None:
        return None
    return f"{settings.auth_username}:{settings.auth_password}".encode()


def _server_ssl_context(settings: Settings) -> ssl.SSLContext:
    if not settings.ssl_certfile:
        raise ValueError("ssl_enabled is set but ssl_certfile is not")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.ssl_client_cafile:
        context.load_verify_locations(settings.ssl_client_cafile)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.ssl_client_auth_required else ssl.CERT_OPTIONAL
        )
    return context


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
