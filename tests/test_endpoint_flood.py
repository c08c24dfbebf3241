"""The metrics port under abuse: idle floods, slow clients, concurrent scrapes under churn.

A real gunicorn under a file-descriptor limit of 1024 (the usual default): before the
endpoint bounded its connections, ~1,000 idle connections took the whole server down.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import threading
import time
from collections.abc import Callable

import psutil
import pytest
from harness import Gunicorn, Samples

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
LIMITS = {"PROMETHEUS_MAX_CONNECTIONS": "16", "PROMETHEUS_HEADER_TIMEOUT": "2"}


def _fds(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def _open_idle(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        held.append(s)
    return held


def test_idle_flood_cannot_take_the_server_down(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", workers=2, env=LIMITS, nofile=1024).start()
    held = _open_idle(g.metrics_port, 2000)
    try:
        # A legitimate scrape still answers, within 2 s, while 2,000 sockets hang on.
        started = time.monotonic()
        status, _, _ = g.metrics_response(timeout=2)
        assert status == 200 and time.monotonic() - started < 2.0
        assert g.request("/") == (200, b"hello")
        master = g.master_pid
        assert _fds(master) < 100, "the master holds only its bounded connections"
        for pid in g.worker_pids():
            assert _fds(pid) < 50, "workers inherit none of the endpoint's connections"
        # A worker exit (the moment the old code died of EMFILE) and a reload.
        victim = g.worker_pids()[0]
        psutil.Process(victim).kill()
        g.wait_for(lambda: len(g.worker_pids()) == 2 and victim not in g.worker_pids())
        g.signal(signal.SIGHUP)
        old = set(g.worker_pids())
        g.wait_for(lambda: len(g.worker_pids()) == 2 and not old & set(g.worker_pids()))
        for pid in g.worker_pids():
            assert _fds(pid) < 50
        assert g.request("/items/1")[0] == 200
        assert g.metrics_response(timeout=2)[0] == 200
    finally:
        for s in held:
            s.close()
    closed = g.value("gunicorn_prom_ext_faults_total", kind="endpoint_connections")
    assert closed >= 2000 - 16
    assert g.log_text().count("metrics endpoint: closed a connection") == 1
    assert g.proc is not None and g.proc.poll() is None


def test_slow_or_silent_clients_are_cut_off(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", env=LIMITS).start()
    silent = socket.create_connection(("127.0.0.1", g.metrics_port), timeout=10)
    trickle = socket.create_connection(("127.0.0.1", g.metrics_port), timeout=10)
    started = time.monotonic()
    trickle.sendall(b"GET /metrics HTTP/1.1\r\n")
    try:
        # One header byte a second never completes the head within the 2 s allowed.
        for byte in b"X-Slow: aaaaaaaaaa\r\n":
            trickle.sendall(bytes([byte]))
            time.sleep(0.5)
    except OSError:
        pass  # cut off: that is the point
    assert silent.recv(1) == b""  # closed by the server, no answer
    assert time.monotonic() - started < 2 + 3
    silent.close()
    trickle.close()
    assert g.metrics_response()[0] == 200


class _Scrapes:
    """Every scrape's counter-like samples, checked against all scrapes that finished
    before it started: no value may go back (Prometheus would see a counter reset)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.floor: Samples = {}
        self.statuses: dict[int, int] = {}
        self.regressions: list[str] = []
        self.count = 0

    def check(self, before: Samples, text: str) -> None:
        samples = _counters(text)
        with self.lock:
            self.count += 1
            for key, value in samples.items():
                if value < before.get(key, 0.0):
                    self.regressions.append(f"{key}: {before[key]} -> {value}")
                if value > self.floor.get(key, 0.0):
                    self.floor[key] = value


def _counters(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram", "summary"):
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def test_concurrent_scrapes_under_churn_never_fail_nor_go_back(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", "--max-requests", "20", workers=2).start()
    scrapes = _Scrapes()
    stop = threading.Event()

    def load() -> None:
        paths = ["/", "/items/1", "/status/404", "/raise-before", "/echo"]
        i = 0
        while not stop.is_set():
            with contextlib.suppress(OSError):  # a worker recycling under us
                g.request(paths[i % len(paths)], method="POST" if i % 5 == 4 else "GET",
                          body=b"x" * (i % 50))  # fmt: skip
            i += 1

    def scrape() -> None:
        while not stop.is_set():
            with scrapes.lock:
                before = dict(scrapes.floor)
            conn = http.client.HTTPConnection("127.0.0.1", g.metrics_port, timeout=10)
            try:
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                body = resp.read()
            finally:
                conn.close()
            with scrapes.lock:
                scrapes.statuses[resp.status] = scrapes.statuses.get(resp.status, 0) + 1
            if resp.status == 200:
                scrapes.check(before, body.decode())

    threads = [threading.Thread(target=load) for _ in range(3)]
    threads += [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(60)
    stop.set()
    for t in threads:
        t.join(30)
    assert list(scrapes.statuses) == [200], scrapes.statuses
    assert scrapes.regressions == []
    assert scrapes.count > 100
    spawned = g.value("gunicorn_worker_spawns_total")
    assert spawned > 10, "the workers recycled under the scrapes"
