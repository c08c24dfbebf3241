"""The metrics port against attacks that once broke it, each on a real gunicorn.

- Connections open while the master forks (HUP, TTIN) were inherited by every new worker:
  a handler's file objects made ``close()`` in the child a no-op, and a TLS connection
  mid-handshake was owned by an object the child never saw.
- Under a low descriptor limit, a flood of clients trickling bytes held the endpoint for
  as long as it lasted: the reaper needed a descriptor (``dup``) to cut a client off, so
  at EMFILE it forgot clients without cutting them off, and more came in past the cap.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import trustme
from harness import Gunicorn, status_of

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]


def _metrics_sockets(pid: int, port: int) -> int:
    """TCP sockets of the process on the metrics port (the listener or connections)."""
    return sum(
        1 for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port
    )  # fmt: skip


@pytest.fixture
def tls_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], ssl.SSLContext]]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    env = {"PROMETHEUS_SSL_ENABLED": "true", "PROMETHEUS_SSL_CERTFILE": str(cert),
           "PROMETHEUS_SSL_KEYFILE": str(key)}  # fmt: skip
    yield env, client


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_workers_forked_while_clients_hang_on_hold_none_of_their_connections(
    gunicorn_factory: GunicornFactory,
    tls_env: tuple[dict[str, str], ssl.SSLContext],
    tls: bool,
) -> None:
    env = {"PROMETHEUS_MAX_CONNECTIONS": "32", "PROMETHEUS_HEADER_TIMEOUT": "60"}
    context = None
    if tls:
        env.update(tls_env[0])
        context = tls_env[1]
    g = gunicorn_factory("testapp:app", workers=2, env=env, metrics_ssl_context=context)
    g.start()
    port = g.metrics_port
    held: list[socket.socket] = []
    try:
        for i in range(20):
            # From two addresses: one address may hold at most half the 32 connections.
            source = (f"127.0.0.{2 + i % 2}", 0)
            s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=source)
            if i % 2:  # half of them past accept and TLS, inside the request's head
                if context is not None:
                    s = context.wrap_socket(s, server_hostname="127.0.0.1")
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            held.append(s)  # the other half silent (over TLS: a handshake never begun)
        g.wait_for(lambda: _metrics_sockets(g.master_pid, port) == 21)  # + the listener

        old = set(g.worker_pids())
        g.signal(signal.SIGHUP)
        g.wait_for(lambda: len(g.worker_pids()) == 2 and not old & set(g.worker_pids()))
        g.signal(signal.SIGTTIN)
        g.wait_for(lambda: len(g.worker_pids()) == 3)
        for pid in g.worker_pids():
            assert _metrics_sockets(pid, port) == 0, f"worker {pid} kept the master's sockets"
        # The clients are still the master's, and answered once they finish their head.
        assert _metrics_sockets(g.master_pid, port) == 21
        last = held[-1]
        last.sendall(b"\r\n")
        assert last.recv(12) == b"HTTP/1.0 200"
        assert g.metrics_response(timeout=5)[0] == 200
    finally:
        for s in held:
            s.close()


def test_clients_are_cut_off_on_time_even_when_the_master_is_out_of_descriptors(
    gunicorn_factory: GunicornFactory,
) -> None:
    env = {"PROMETHEUS_MAX_CONNECTIONS": "16", "PROMETHEUS_HEADER_TIMEOUT": "2"}
    g = gunicorn_factory("testapp:app", workers=2, env=env).start()
    time.sleep(2)  # gunicorn's master opens what it needs after start (its control socket)
    # A descriptor limit that 12 connections exhaust (an operator's low ulimit, or a
    # master that needs its descriptors for something else): below the cap of 16.
    master = psutil.Process(g.master_pid)
    limit = master.num_fds() + 12
    master.rlimit(psutil.RLIMIT_NOFILE, (limit, limit))
    # 14 clients trickling a byte every 50 ms: every read the server makes succeeds,
    # so only the head deadline can cut them off (two wait in the accept queue at first).
    clients = [socket.create_connection(("127.0.0.1", g.metrics_port), timeout=1)
               for _ in range(14)]  # fmt: skip
    connected = time.monotonic()
    lifetimes: dict[int, float] = {}
    while len(lifetimes) < len(clients) and time.monotonic() - connected < 12:
        for i, s in enumerate(clients):
            if i in lifetimes:
                continue
            try:
                s.send(b"G")
            except OSError:
                lifetimes[i] = time.monotonic() - connected
        time.sleep(0.05)
    for s in clients:
        s.close()
    # Each within its 2 s of the accept (the queued two after a first round): never held.
    assert len(lifetimes) == len(clients), f"{len(clients) - len(lifetimes)} never cut off"
    assert max(lifetimes.values()) < 8
    assert g.metrics_response(timeout=5)[0] == 200
    assert g.request("/") == (200, b"hello")


def test_a_flood_of_scrapes_of_a_big_page_does_not_stall_the_master(
    gunicorn_factory: GunicornFactory,
) -> None:
    # A big page: 2,000 label sets per worker (an adapter passing raw paths), ~10 MB.
    g = gunicorn_factory("testapp:app", "-k", "gthread", "--threads", "8", workers=2).start()
    with ThreadPoolExecutor(16) as pool:
        statuses = set(pool.map(lambda i: g.request(f"/misroute/r{i}")[0], range(4000)))
    assert statuses == {200}
    stop = threading.Event()
    results: list[object] = []

    def scrape_in_a_loop(n: int) -> None:  # anyone who can reach the port, by default
        deadline = time.monotonic() + 60
        # From two addresses: one address may hold at most half the 32 connections.
        source = (f"127.0.0.{2 + n % 2}", 0)
        while not stop.is_set() and time.monotonic() < deadline:
            connection = http.client.HTTPConnection(
                "127.0.0.1", g.metrics_port, timeout=30, source_address=source
            )
            try:
                connection.request("GET", "/metrics")
                response = connection.getresponse()
                response.read()
                results.append(response.status)
            except (OSError, http.client.HTTPException) as exc:
                results.append(type(exc).__name__)
            finally:
                connection.close()

    scrapers = [threading.Thread(target=scrape_in_a_loop, args=(n,), daemon=True)
                for n in range(24)]  # fmt: skip
    for scraper in scrapers:
        scraper.start()
    try:
        time.sleep(3)
        # gunicorn's main loop folds a dead worker's files, then replaces it: once, that
        # fold waited behind two dozen renderings competing for the GIL, for minutes.
        victim = g.worker_pids()[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        g.wait_for(lambda: len(g.worker_pids()) == 2 and victim not in g.worker_pids(),
                   timeout=15)  # fmt: skip
        assert time.monotonic() - killed < 10
        assert g.request("/")[0] == 200
    finally:
        stop.set()
        for scraper in scrapers:
            scraper.join(40)
    assert results and set(results) == {200}


def test_oversized_request_heads_cost_the_master_no_memory(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app").start()
    master = psutil.Process(g.master_pid)
    before = master.memory_info().rss
    line = b"X-Filler: " + b"a" * 65000 + b"\r\n"
    answers: list[bytes] = []

    def send_a_huge_head() -> None:
        # What http.server alone accepts: 100 header lines of 64 KiB (~6.5 MB).
        with socket.create_connection(("127.0.0.1", g.metrics_port), timeout=10) as s:
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\n" + line * 99)
                answers.append(s.recv(64))
            except OSError:
                answers.append(b"cut off")  # the 431 came while it was still sending

    for _ in range(3):
        clients = [threading.Thread(target=send_a_huge_head) for _ in range(32)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(30)
    growth = master.memory_info().rss - before
    assert growth < 64 << 20, f"the master grew by {growth >> 20} MiB"
    assert all(a.startswith(b"HTTP/1.0 431") or a == b"cut off" for a in answers), answers
    # A head of honest size, even with a long token, is still answered.
    assert g.metrics_response(headers={"X-Long-Token": "t" * 16000})[0] == 200


def test_the_connection_cap_stays_within_the_descriptor_limit(
    gunicorn_factory: GunicornFactory,
) -> None:
    # 32 connections held under a limit of 64 descriptors would leave gunicorn's own main
    # loop none: the cap shrinks to half of what the master has to spare, and says so.
    g = gunicorn_factory("testapp:app", nofile=64).start()
    line = next(line for line in g.log_text().splitlines() if "holding at most" in line)
    cap = int(line.split("holding at most ")[1].split()[0])
    assert 1 <= cap < 32
    held = [socket.create_connection(("127.0.0.1", g.metrics_port), timeout=5)
            for _ in range(40)]  # fmt: skip
    try:
        time.sleep(0.5)
        assert g.metrics_response(timeout=5)[0] == 200
        assert g.request("/") == (200, b"hello")
        assert psutil.Process(g.master_pid).num_fds() < 64
    finally:
        for s in held:
            s.close()


def _slow_reader(port: int, source: str) -> socket.socket:
    """A client from ``source`` that asks for the page and reads almost none of it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    return s


def _held_from(g: Gunicorn, address: str) -> int:
    """Connections from ``address`` the master holds open on the metrics port."""
    return sum(
        1 for c in psutil.Process(g.master_pid).net_connections(kind="tcp")
        if c.laddr and c.laddr.port == g.metrics_port and c.raddr and c.raddr.ip == address
        and c.status == psutil.CONN_ESTABLISHED
    )  # fmt: skip


@pytest.fixture(scope="module")
def big_page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """A page far larger than what the kernel buffers for one connection (~10 MB), and
    12 s to take an answer (30 by default)."""
    g = Gunicorn(
        "testapp:app", "-k", "gthread", "--threads", "8", workers=2,
        tmp_dir=tmp_path_factory.mktemp("big-page"), env={"PROMETHEUS_RESPONSE_TIMEOUT": "12"},
    ).start()  # fmt: skip
    try:
        with ThreadPoolExecutor(16) as pool:
            statuses = set(pool.map(lambda i: g.request(f"/misroute/r{i}")[0], range(4000)))
        assert statuses == {200}
        assert len(g.metrics_text()) > 8_000_000
        yield g
    finally:
        g.stop()


def test_slow_readers_from_one_address_leave_room_for_probes_and_scrapes(
    big_page_server: Gunicorn,
) -> None:
    g = big_page_server
    readers: list[socket.socket] = []
    try:
        for _ in range(40):  # more than the 32 connections the endpoint holds
            readers.append(_slow_reader(g.metrics_port, "127.0.0.2"))
        time.sleep(1)  # every answer admitted is under way, stuck on a full window
        # Half of 32: the rest were refused, or cut off while they waited for room.
        assert _held_from(g, "127.0.0.2") == 16
        started = time.monotonic()
        assert status_of(g.metrics_port, "/healthz") == 200
        assert time.monotonic() - started < 2
        assert status_of(g.metrics_port, "/metrics") == 200
        assert g.request("/") == (200, b"hello")
    finally:
        for reader in readers:
            reader.close()


def test_an_answer_read_too_slowly_is_cut_off_on_time(big_page_server: Gunicorn) -> None:
    """Read at 256 KB/s: never stalled long enough for the 10 s write timeout, but 10 MB
    would take 40 s. The master lets go of it at 12 s (PROMETHEUS_RESPONSE_TIMEOUT)."""
    g = big_page_server
    reader = _slow_reader(g.metrics_port, "127.0.0.3")
    started = time.monotonic()
    received, held, let_go = 0, [], None
    try:
        while time.monotonic() - started < 30:
            step = time.monotonic()
            wanted = received + 64 * 1024
            while received < wanted:
                chunk = reader.recv(65536)
                if not chunk:
                    raise ConnectionResetError("closed")
                received += len(chunk)
            if _held_from(g, "127.0.0.3") == 0:
                let_go = time.monotonic() - started
                break
            held.append(time.monotonic() - started)
            time.sleep(max(0.0, 0.25 - (time.monotonic() - step)))
    except (ConnectionResetError, TimeoutError):
        let_go = time.monotonic() - started
    finally:
        reader.close()
    assert let_go is not None, f"still held after 30 s, {received} bytes in"
    assert max(held) > 11, f"let go early, after {let_go:.1f} s, {received} bytes in"
    assert let_go < 14, f"let go after {let_go:.1f} s"
    assert received < 5_000_000
