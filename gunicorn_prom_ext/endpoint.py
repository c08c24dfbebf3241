"""The ``/metrics`` HTTP(S) endpoint, served from background threads of the gunicorn master.

This module is its life (bind, retry a busy port, stop), its authentication and the
rendering of a page. One request's handling (paths, status codes) is in
endpoint_requests.py; the connections (limits, deadlines, fork safety) in http_server.py.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import hmac
import os
import resource
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric

from .endpoint_requests import METRICS_PATH, RequestHandler, SourceUnavailable
from .http_server import BoundedServer, Connection, Limits
from .log import Log
from .natives import natives
from .settings import Settings
from .single_flight import SingleFlight

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["METRICS_PATH", "MetricsEndpoint", "SourceUnavailable"]

GZIP_LEVEL = 6  # level 9 costs about 5x the CPU for a ~7 % smaller body
# Distinct scrape errors remembered for log de-duplication; bounded so that messages
# carrying varying details cannot grow memory without limit.
MAX_REMEMBERED_ERRORS = 64


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
        self._limits = Limits(
            settings.max_connections, settings.header_timeout,
            response_timeout=settings.response_timeout,
        )  # fmt: skip
        # Real threads and sockets, even in a master eventlet has patched (natives.py).
        self._real = real = natives()
        self._expected_basic = _basic_credentials(settings)
        self._expected_token = (
            settings.auth_token.encode() if settings.auth_token is not None else None
        )
        self._stopping = real.threading.Event()
        # Guards the hand-over of _server between the serving thread and stop().
        self._lock = real.threading.Lock()
        self._server: BoundedServer | None = None
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._url: str | None = None
        self._errors_lock = real.threading.Lock()
        self._logged_errors: set[str] = set()
        self._limit_logged = False
        # Concurrent scrapes of the same page share one rendering (single_flight.py).
        self._renders: SingleFlight[tuple[bytes, list[tuple[str, str]]]] = SingleFlight(
            real.threading
        )

    @property
    def url(self) -> str | None:
        return self._url

    def start(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        self._owner_pid = os.getpid()
        self._limits = self._within_descriptor_limit(self._limits)
        # The first attempt is made here, in the caller's thread, so that a port that is
        # free is serving by the time when_ready returns.
        server = self._try_bind(failing=False)
        self._thread = self._real.threading.Thread(
            target=self._run, args=(server,), name="gunicorn-prom-ext-metrics", daemon=True
        )
        self._thread.start()

    def _within_descriptor_limit(self, limits: Limits) -> Limits:
        """At most half the descriptors the master has to spare: connections held to the
        full cap must never leave gunicorn's own main loop without one."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return limits
        try:
            in_use = len(os.listdir("/proc/self/fd"))
        except OSError:
            in_use = 64
        room = max(1, (soft - in_use) // 2)
        if limits.max_connections <= room:
            return limits
        self._log.warning(
            "metrics endpoint: holding at most %d connections, not %d: the master may open "
            "%d files and has %d open (raise the limit with ulimit -n)",
            room, limits.max_connections, soft, in_use,
        )  # fmt: skip
        return dataclasses.replace(limits, max_connections=room)

    def close_inherited_socket(self) -> None:
        """In a forked child: its copies were closed right after the fork (http_server.py);
        this only makes sure nothing here serves or stops the master's server."""
        self._stopping.set()
        self._server = None

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self._stop(timeout)
        except Exception:
            self._log.exception("metrics endpoint: error while stopping")

    def _stop(self, timeout: float) -> None:
        self._stopping.set()
        if os.getpid() != self._owner_pid:
            self.close_inherited_socket()
            return
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            # On Linux shutdown() stops the shared socket listening in every process, so
            # even a child that leaked a copy cannot keep a successor off the port.
            server.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if server is not None:
            server.close()
        self._url = None

    # -- serving thread -------------------------------------------------------------

    def _run(self, server: BoundedServer | None) -> None:
        try:
            if server is None:
                server = self._bind_with_retry()
            if server is None:
                return
            with self._lock:
                if self._stopping.is_set():
                    server.close()
                    self._url = None
                    return
                self._server = server
            server.serve_forever()
        except Exception:
            self._log.exception("metrics endpoint: serving thread failed")
            self._fault("endpoint_serve")

    def _bind_with_retry(self) -> BoundedServer | None:
        # start() already failed once and said so; keep quiet until it works.
        while not self._stopping.wait(self._retry_interval):
            server = self._try_bind(failing=True)
            if server is not None:
                return server
        return None

    def _try_bind(self, *, failing: bool) -> BoundedServer | None:
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

    def _bind(self) -> BoundedServer:
        s = self._settings
        ssl_context = _server_ssl_context(s, self._real.ssl) if s.ssl_enabled else None
        family, _, _, _, address = self._real.socket.getaddrinfo(
            s.bind_address, s.metrics_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        server = BoundedServer(
            address, family, self._handle, self._limits, ssl_context, self._limit_reached,
            self._real,
        )  # fmt: skip
        port = server.server_address[1]
        scheme = "https" if ssl_context is not None else "http"
        self._url = f"{scheme}://{_host_port(s.bind_address, port)}{METRICS_PATH}"
        return server

    def _handle(self, connection: Connection) -> None:
        RequestHandler(connection, self)

    # -- used by connection threads ---------------------------------------------------

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
            try:
                given = credentials.encode()
            except UnicodeEncodeError:
                return False
            return hmac.compare_digest(given, self._expected_token)
        return False

    def challenges(self) -> list[str]:
        out = []
        if self._expected_basic is not None:
            out.append('Basic realm="metrics", charset="UTF-8"')
        if self._expected_token is not None:
            out.append('Bearer realm="metrics"')
        return out

    def render(
        self, accept: str, accept_encoding: str, names: Iterable[str] = ()
    ) -> tuple[bytes, list[tuple[str, str]]]:
        """Return (body, headers); raises whatever the registry's collectors raise.

        ``names``: prometheus_client's ``name[]`` filter, sample names to keep (all if
        empty).
        """
        wanted = frozenset(names)
        compress = gzip_accepted(accept_encoding)

        def render_once() -> tuple[bytes, list[tuple[str, str]]]:
            encoder, content_type = choose_encoder(accept)
            registry: CollectorRegistry | _Filtered = (
                _Filtered(self._registry, wanted) if wanted else self._registry
            )
            body = encoder(registry)
            headers = [("Content-Type", content_type)]
            if compress:
                body = gzip.compress(body, compresslevel=GZIP_LEVEL)
                headers.append(("Content-Encoding", "gzip"))
            return body, headers

        body, headers = self._renders.run((accept, compress, wanted), render_once)
        return body, list(headers)

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

    def _limit_reached(self, kind: str) -> None:
        self._fault(kind)
        if not self._limit_logged:
            self._limit_logged = True
            self._log.warning(
                "metrics endpoint: closed a connection that sent no request within %gs, "
                "did not take its answer within %gs, or to stay within %d connections (%d "
                "from one client); further ones are counted in "
                'gunicorn_prom_ext_faults_total{kind="%s"}',
                self._limits.header_timeout, self._limits.response_timeout,
                self._limits.max_connections, self._limits.per_address, kind,
            )  # fmt: skip

    def _fault(self, kind: str) -> None:
        if self._on_fault is None:
            return
        try:
            self._on_fault(kind)
        except Exception:
            self._log.debug("metrics endpoint: on_fault(%r) failed", kind, exc_info=True)


class _Filtered:
    """The registry seen through a ``name[]`` filter: only the samples named."""

    def __init__(self, registry: CollectorRegistry, names: frozenset[str]) -> None:
        self._registry = registry
        self._names = names

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            samples = [s for s in metric.samples if s.name in self._names]
            if samples:
                kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                kept.samples = samples
                yield kept


def _basic_credentials(settings: Settings) -> bytes | None:
    if settings.auth_username is None or settings.auth_password is None:
        return None
    return f"{settings.auth_username}:{settings.auth_password}".encode()


def _server_ssl_context(settings: Settings, ssl_module: Any = ssl) -> ssl.SSLContext:
    if not settings.ssl_certfile:
        raise ValueError("ssl_enabled is set but ssl_certfile is not")
    context: ssl.SSLContext = ssl_module.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.ssl_client_cafile:
        context.load_verify_locations(settings.ssl_client_cafile)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.ssl_client_auth_required else ssl.CERT_OPTIONAL
        )
    return context


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
