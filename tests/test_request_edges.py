"""Counts stay exact for every response, whatever the app, the adapter or the client send."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import Gunicorn, Samples

from gunicorn_prom_ext.labels import MAX_SERIES

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
HISTOGRAMS = (
    "http_server_request_duration_seconds",
    "http_server_request_body_size_bytes",
    "http_server_response_body_size_bytes",
)


def _by_labels(m: Samples, sample: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for (name, labels), value in m.items():
        if name == sample:
            d = dict(labels)
            out[(d["http_request_method"], d["http_route"], d["http_response_status_code"])] = value
    return out


def _raw(g: Gunicorn, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", g.app_port), timeout=10) as s:
        s.sendall(head)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_every_request_counted_once_in_all_three_histograms(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app").start()
    # An app that never calls start_response: gunicorn sends a status line of "None",
    # counted once as _OTHER, and the request leaves the active gauge.
    reply = _raw(g, b"GET /no-start-response HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 None\r\n")
    # Content-Length of 400 digits, and a lie of 10**18: the size counts as unknown (0).
    for length in ("9" * 400, str(10**18)):
        reply = _raw(g, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"Content-Length: " + length.encode() + b"\r\n\r\n")  # fmt: skip
        assert reply.startswith(b"HTTP/1.1 200"), reply[:80]
    # Statuses gunicorn lets through but no client should see: one bounded label.
    assert g.request("/status/999")[0] == 999
    assert g.request("/status/600")[0] == 600
    assert g.request("/status/599")[0] == 599

    def settled() -> Samples | None:
        m = g.metrics()
        counts = [_by_labels(m, f"{h}_count") for h in HISTOGRAMS]
        return m if counts[0] == counts[1] == counts[2] and sum(counts[0].values()) == 6 else None

    m = g.wait_for(settled, timeout=10)
    assert _by_labels(m, f"{HISTOGRAMS[0]}_count") == {
        ("GET", "", "200"): 2.0,
        ("GET", "", "_OTHER"): 3.0,
        ("GET", "", "599"): 1.0,
    }
    assert _by_labels(m, f"{HISTOGRAMS[1]}_sum")[("GET", "", "200")] == 0.0
    assert m[("http_server_active_requests", (("http_request_method", "GET"),))] == 0.0
    assert g.value("gunicorn_prom_ext_faults_total", kind="request") == 0.0


def test_hostile_routes_are_bounded_and_never_break_the_page(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app").start()
    for kind in ("int", "huge", "surrogate", "list", "none"):
        assert g.request(f"/misroute/{kind}")[0] == 200
    def all_counted() -> Samples | None:
        m = g.metrics()
        return m if sum(_by_labels(m, f"{HISTOGRAMS[0]}_count").values()) == 5 else None

    m = g.wait_for(all_counted)
    assert _by_labels(m, f"{HISTOGRAMS[0]}_count") == {
        ("GET", "_OTHER", "200"): 4.0,  # not a string, too long, not encodable
        ("GET", "", "200"): 1.0,  # None: no route
    }


def test_odd_content_lengths_left_by_the_app_keep_the_status(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app").start()
    for kind in ("list", "bytes", "int", "arabic", "huge"):
        assert g.request(f"/mangle-length/{kind}") == (200, b"mangled")

    def all_counted() -> Samples | None:
        m = g.metrics()
        return m if sum(_by_labels(m, f"{HISTOGRAMS[0]}_count").values()) == 5 else None

    m = g.wait_for(all_counted)
    for histogram in HISTOGRAMS:
        assert _by_labels(m, f"{histogram}_count") == {("GET", "", "200"): 5.0}
    assert _by_labels(m, f"{HISTOGRAMS[1]}_sum") == {("GET", "", "200"): 5.0}  # the int only
    assert g.value("gunicorn_prom_ext_faults_total", kind="request") == 0.0


def test_label_set_cap_holds_per_worker_across_threads(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", "--threads", "8").start()
    routes = MAX_SERIES + 500

    def hit(i: int) -> int | None:
        return g.request(f"/misroute/r{i}")[0]

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(hit, range(routes))) == {200}
    m = g.metrics()
    counts = _by_labels(m, f"{HISTOGRAMS[0]}_count")
    assert sum(counts.values()) == routes  # every request counted
    assert len(counts) <= MAX_SERIES + 1  # 2,000 routes, then one _OTHER
    assert counts[("GET", "_OTHER", "200")] >= 500
    assert g.log_text().count("request label sets in this worker") == 1


def test_active_requests_is_published_at_zero_before_any_request(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", workers=2).start()
    text = g.metrics_text()
    assert "# TYPE http_server_active_requests gauge" in text
    m = g.metrics()
    active = {dict(k[1])["http_request_method"]: v for k, v in m.items()
              if k[0] == "http_server_active_requests"}  # fmt: skip
    assert active == {method: 0.0 for method in (
        "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "_OTHER"
    )}  # fmt: skip
    # And it follows requests in flight.
    t = threading.Thread(target=g.request, args=("/sleep/1",))
    t.start()
    g.wait_for(lambda: g.value("http_server_active_requests", http_request_method="GET") == 1.0)
    t.join()
    g.wait_for(lambda: g.value("http_server_active_requests", http_request_method="GET") == 0.0)
