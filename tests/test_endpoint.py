"""The metrics endpoint over real sockets on 127.0.0.1: HTTP, auth, TLS, busy port, fork."""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme
from prometheus_client import Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gunicorn_prom_ext.endpoint import MetricsEndpoint
from gunicorn_prom_ext.settings import Settings

Headers = dict[str, str]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


class FailingCollector(Collector):
    def __init__(self) -> None:
        self.failing = False

    def collect(self) -> Iterable[Metric]:
        if self.failing:
            raise RuntimeError("disk on fire")
        return []


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("app_hits", "Hits.", registry=reg).inc(3)
    return reg


@pytest.fixture
def records() -> ListHandler:
    return ListHandler()


@pytest.fixture
def log(records: ListHandler) -> logging.Logger:
    logger = logging.Logger("test_endpoint", logging.DEBUG)  # unregistered: no global state
    logger.addHandler(records)
    return logger


@pytest.fixture
def faults() -> list[str]:
    return []


Serve = Callable[..., MetricsEndpoint]


@pytest.fixture
def serve(registry: CollectorRegistry, log: logging.Logger, faults: list[str]) -> Iterator[Serve]:
    started: list[MetricsEndpoint] = []

    def _serve(wait: bool = True, retry_interval: float = 2.0, **fields: object) -> MetricsEndpoint:
        fields.setdefault("bind_address", "127.0.0.1")
        fields.setdefault("metrics_port", 0)
        settings = Settings(**fields)  # type: ignore[arg-type]
        ep = MetricsEndpoint(
            settings, registry, log, retry_interval=retry_interval, on_fault=faults.append
        )
        started.append(ep)
        ep.start()
        if wait:
            wait_for_url(ep)
        return ep

    yield _serve
    for ep in started:
        ep.stop()


def wait_for_url(ep: MetricsEndpoint, timeout: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    while ep.url is None:
        assert time.monotonic() < deadline, "endpoint did not bind"
        time.sleep(0.01)
    return ep.url


def request(
    ep: MetricsEndpoint,
    method: str = "GET",
    path: str = "/metrics",
    headers: Headers | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Headers, bytes]:
    assert ep.url is not None
    parts = urlsplit(ep.url)
    assert parts.hostname is not None and parts.port is not None
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def port_of(ep: MetricsEndpoint) -> int:
    assert ep.url is not None
    port = urlsplit(ep.url).port
    assert port is not None
    return port


def basic(user: str, password: str) -> Headers:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- HTTP ---------------------------------------------------------------------------------


def test_open_endpoint_serves_counter(serve: Serve) -> None:
    ep = serve()
    assert ep.url == f"http://127.0.0.1:{port_of(ep)}/metrics"
    status, headers, body = request(ep, path="/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert int(headers["Content-Length"]) == len(body)
    assert "app_hits_total 3.0\n" in body.decode()
    assert "app_hits_created" in body.decode()


def test_name_filter_keeps_only_the_samples_named(serve: Serve) -> None:
    # prometheus_client's own convention: ?name[]=<sample name>, repeatable.
    ep = serve()
    status, _, body = request(ep, path="/metrics?name[]=app_hits_total")
    assert status == 200
    lines = [line for line in body.decode().splitlines() if not line.startswith("#")]
    assert lines == ["app_hits_total 3.0"]
    status, _, body = request(ep, path="/metrics?name[]=nothing_by_this_name")
    assert (status, body) == (200, b"")
    # A flood of filters is refused, cheaply and politely.
    many = "&".join(f"name[]=n{i}" for i in range(5000))
    status, _, body = request(ep, path=f"/metrics?{many}")
    assert (status, body) == (400, b"Bad Request: at most 256 name[] filters\n")
    assert request(ep, path="/metrics")[0] == 200


def test_other_paths(serve: Serve) -> None:
    ep = serve(auth_token="secret")
    status, _, body = request(ep, path="/other")
    assert status == 404 and b"app_hits" not in body
    # The root points at the two paths; health needs no credentials and shows no data.
    status, _, body = request(ep, path="/")
    assert (status, body) == (200, b"gunicorn-prom-ext: metrics at /metrics, health at /healthz\n")
    status, _, body = request(ep, path="/healthz")
    assert (status, body) == (200, b"ok\n")
    assert request(ep, path="/metrics")[0] == 401


def test_post_is_405(serve: Serve) -> None:
    status, headers, _ = request(serve(), method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


def test_head_has_headers_but_no_body(serve: Serve) -> None:
    ep = serve()
    _, _, get_body = request(ep)
    status, headers, body = request(ep, method="HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) == len(get_body)


def test_gzip_round_trip(serve: Serve) -> None:
    ep = serve()
    _, _, plain = request(ep)
    status, headers, body = request(ep, headers={"Accept-Encoding": "br, gzip;q=0.9"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body)
    assert gzip.decompress(body) == plain


def test_openmetrics_negotiation(serve: Serve) -> None:
    accept = "application/openmetrics-text; version=1.0.0, text/plain;q=0.5"
    status, headers, body = request(serve(), headers={"Accept": accept})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b"app_hits_total 3.0\n" in body


# -- auth ---------------------------------------------------------------------------------


def assert_unauthorized(ep: MetricsEndpoint, headers: Headers | None, challenge: str) -> None:
    status, resp_headers, body = request(ep, headers=headers)
    assert status == 401
    assert resp_headers["WWW-Authenticate"].startswith(challenge)
    assert b"app_hits" not in body


def test_basic_auth(serve: Serve) -> None:
    ep = serve(auth_username="prom", auth_password="s3cret")
    assert_unauthorized(ep, None, "Basic ")
    assert_unauthorized(ep, basic("prom", "wrong"), "Basic ")
    assert_unauthorized(ep, {"Authorization": "Basic !!not-base64!!"}, "Basic ")
    assert_unauthorized(ep, {"Authorization": "Bearer s3cret"}, "Basic ")
    status, _, body = request(ep, headers=basic("prom", "s3cret"))
    assert status == 200
    assert b"app_hits_total 3.0" in body


def test_bearer_token(serve: Serve) -> None:
    ep = serve(auth_token="tok-123")
    assert_unauthorized(ep, None, "Bearer")
    assert_unauthorized(ep, {"Authorization": "Bearer tok-124"}, "Bearer")
    status, _, body = request(ep, headers={"Authorization": "bearer tok-123"})
    assert status == 200
    assert b"app_hits_total 3.0" in body


def test_basic_and_bearer_both_accepted(serve: Serve) -> None:
    ep = serve(auth_username="prom", auth_password="pw", auth_token="tok")
    status, headers, _ = request(ep)
    assert status == 401
    assert headers["WWW-Authenticate"]  # http.client keeps the last of the two challenges
    assert request(ep, headers=basic("prom", "pw"))[0] == 200
    assert request(ep, headers={"Authorization": "Bearer tok"})[0] == 200
    assert request(ep, headers={"Authorization": "Bearer pw"})[0] == 401


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, object]:
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return {
        "ssl_enabled": True,
        "ssl_certfile": str(certfile),
        "ssl_keyfile": str(keyfile),
        "ssl_client_cafile": str(cafile),
    }


def client_context(ca: trustme.CA, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if with_cert:
        ca.issue_cert("scraper.example.org").configure_cert(context)
    return context


def test_tls(serve: Serve, ca: trustme.CA, tls_files: dict[str, object]) -> None:
    ep = serve(**tls_files)
    assert ep.url == f"https://127.0.0.1:{port_of(ep)}/metrics"
    status, _, body = request(ep, context=client_context(ca))
    assert status == 200
    assert b"app_hits_total 3.0" in body


def test_tls_client_cert_required(
    serve: Serve, ca: trustme.CA, tls_files: dict[str, object]
) -> None:
    ep = serve(ssl_client_auth_required=True, **tls_files)
    with pytest.raises(OSError):  # ssl.SSLError or a reset, depending on the TLS version
        request(ep, context=client_context(ca))
    with pytest.raises(OSError):
        request(ep, context=client_context(trustme.CA(), with_cert=True))  # untrusted issuer
    status, _, body = request(ep, context=client_context(ca, with_cert=True))
    assert status == 200
    assert b"app_hits_total 3.0" in body


def test_stalled_tls_client_does_not_block_others(
    serve: Serve, ca: trustme.CA, tls_files: dict[str, object]
) -> None:
    ep = serve(**tls_files)
    with socket.create_connection(("127.0.0.1", port_of(ep))):  # never sends a ClientHello
        status, _, _ = request(ep, context=client_context(ca))
    assert status == 200


# -- failures -----------------------------------------------------------------------------


def test_busy_port_retries_quietly_then_binds(
    serve: Serve, records: ListHandler, faults: list[str]
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        t0 = time.monotonic()
        ep = serve(wait=False, retry_interval=0.1, metrics_port=port)
        assert time.monotonic() - t0 < 0.2
        time.sleep(0.5)  # several retry intervals
        assert ep.url is None
        warnings = records.at(logging.WARNING)
        assert len(warnings) == 1
        assert f"127.0.0.1:{port}" in warnings[0]
        assert faults == ["endpoint_bind"]
    finally:
        holder.close()
    url = wait_for_url(ep)
    assert url == f"http://127.0.0.1:{port}/metrics"
    assert request(ep)[0] == 200
    assert any(url in m for m in records.at(logging.INFO))
    assert len(records.at(logging.WARNING)) == 1


def test_collection_failure_is_500_and_logged_once(
    serve: Serve, registry: CollectorRegistry, records: ListHandler, faults: list[str]
) -> None:
    collector = FailingCollector()
    registry.register(collector)
    ep = serve()
    collector.failing = True
    for _ in range(3):
        status, headers, body = request(ep)
        assert status == 500
        assert headers["Content-Type"].startswith("text/plain")
        assert b"disk on fire" not in body and b"Traceback" not in body
    errors = [r for r in records.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "disk on fire" in errors[0].getMessage()
    assert faults == ["scrape"] * 3
    collector.failing = False
    status, _, body = request(ep)
    assert status == 200
    assert b"app_hits_total 3.0" in body


def test_stop_is_idempotent_and_frees_the_port(serve: Serve) -> None:
    ep = serve()
    port = port_of(ep)
    t0 = time.monotonic()
    ep.stop()
    ep.stop()
    assert time.monotonic() - t0 < 0.4
    assert ep.url is None
    assert can_listen_on(port)


def test_stop_before_bind_and_without_start(serve: Serve) -> None:
    MetricsEndpoint(Settings(), CollectorRegistry(), logging.Logger("x")).stop()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        ep = serve(wait=False, retry_interval=0.05, metrics_port=holder.getsockname()[1])
        ep.stop()
    finally:
        holder.close()


def test_ipv6(serve: Serve) -> None:
    if not socket.has_ipv6 or not can_listen_on(0, "::1", socket.AF_INET6):
        pytest.skip("no IPv6 loopback")
    ep = serve(bind_address="::1")
    assert ep.url == f"http://[::1]:{port_of(ep)}/metrics"
    assert request(ep)[0] == 200


# -- fork ---------------------------------------------------------------------------------


def can_listen_on(port: int, host: str = "127.0.0.1", family: int = socket.AF_INET) -> bool:
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a successor master would
        try:
            s.bind((host, port))
            s.listen()
        except OSError:
            return False
    return True


def listening_inode(port: int) -> str:
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:  # 0A: LISTEN
                return fields[9]
    raise AssertionError(f"nothing listens on {port}")


def holds_socket(pid: int, inode: str) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) == f"socket:[{inode}]":
                return True
        except FileNotFoundError:  # closed meanwhile, e.g. the fd listdir itself used
            pass
    return False


def fork_child(ep: MetricsEndpoint, close_socket: bool) -> int:
    """Fork a stand-in worker; return its pid once it has (or has not) closed the socket."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child leaves with os._exit
        try:
            if close_socket:
                ep.close_inherited_socket()
            os.write(ready_w, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    return pid


def reap(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("close_socket", [True, False])
def test_forked_worker_does_not_keep_the_port(serve: Serve, close_socket: bool) -> None:
    ep = serve()
    port = port_of(ep)
    inode = listening_inode(port)
    assert holds_socket(os.getpid(), inode)  # the check sees a socket where there is one
    pid = fork_child(ep, close_socket)
    try:
        # Closed right after the fork, whether or not the child asks.
        assert not holds_socket(pid, inode)
        assert request(ep)[0] == 200  # the parent still serves after the fork
        ep.stop()
        assert not holds_socket(os.getpid(), inode)
        # Even a leaked copy must not keep a successor out: stop() also shuts the
        # shared socket down, so the leaked copy no longer listens.
        assert can_listen_on(port)
    finally:
        reap(pid)
