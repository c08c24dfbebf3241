"""Request metrics end to end: a real gunicorn, a known mix of requests, exact counts."""

from __future__ import annotations

import random
import socket
import string
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from harness import Gunicorn, require_tool

from gunicorn_prom_ext.labels import STANDARD_METHODS

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
COUNT = "http_server_request_duration_seconds_count"


def _counts(g: Gunicorn, name: str = COUNT) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for (sample, labels), value in g.metrics().items():
        if sample == name:
            d = dict(labels)
            key = (d["http_request_method"], d["http_route"], d["http_response_status_code"])
            out[key] = value
    return out


def test_exact_counts_by_method_route_status(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", workers=2).start()
    for _ in range(3):
        assert g.request("/") == (200, b"hello")
    for i in range(4):
        assert g.request(f"/items/{i}")[0] == 200
    assert g.request("/items/9", method="DELETE")[0] == 200
    for _ in range(2):
        assert g.request("/echo", method="POST", body=b"abcd") == (200, b"abcd")
    assert g.request("/status/404")[0] == 404
    assert g.request("/raise-before")[0] == 500
    # start_response ran but nothing was sent: the client got gunicorn's 500, counted once.
    assert g.request("/raise-after")[0] == 500
    # The headers went out with 200 before the failure: the client saw 200.
    assert g.request("/raise-midstream")[0] == 200
    for _ in range(2):
        assert g.request("/", method="PROPFIND")[0] == 200

    expected = {
        ("GET", "", "200"): 4.0,  # 3 x "/" and the midstream failure
        ("GET", "/items/<n>", "200"): 4.0,
        ("DELETE", "/items/<n>", "200"): 1.0,
        ("POST", "", "200"): 2.0,
        ("GET", "", "404"): 1.0,
        ("GET", "", "500"): 2.0,
        ("_OTHER", "", "200"): 2.0,
    }
    assert g.wait_for(lambda: _counts(g) == expected, timeout=5, message=str(_counts(g)))
    labels = {"http_request_method": "POST", "http_route": "", "http_response_status_code": "200"}
    assert g.value("http_server_request_body_size_bytes_sum", **labels) == 8.0
    labels["http_request_method"] = "GET"
    labels["http_route"] = "/items/<n>"
    assert g.value("http_server_response_body_size_bytes_sum", **labels) == 4 * len(b"item 0")
    assert g.value("http_server_active_requests", http_request_method="GET") == 0.0
    # le buckets are cumulative and end at the count.
    assert (
        g.value("http_server_request_duration_seconds_bucket", le="+Inf", **labels) == 4.0
    )


def test_active_requests_gauge_follows_in_flight_requests(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", "--threads", "4").start()
    clients = [threading.Thread(target=g.request, args=("/sleep/1.5",)) for _ in range(3)]
    for t in clients:
        t.start()
    assert g.wait_for(
        lambda: g.value("http_server_active_requests", http_request_method="GET") == 3.0,
        timeout=1.4,
    )
    for t in clients:
        t.join()
    assert g.value("http_server_active_requests", http_request_method="GET") == 0.0


def test_gthread_counts_every_concurrent_request(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", "--threads", "8", workers=2).start()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: g.request(f"/items/{i}")[0], range(400)))
    assert statuses == [200] * 400
    assert g.wait_for(lambda: _counts(g).get(("GET", "/items/<n>", "200")) == 400.0, timeout=5)


def test_random_paths_and_methods_add_only_a_handful_of_series(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", workers=2).start()
    rng = random.Random(7)

    def one(_: int) -> int | None:
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        if rng.random() < 0.3:
            method = rng.choice(sorted(STANDARD_METHODS - {"CONNECT"}))
        path = "/" + "/".join(
            "".join(rng.choices(string.ascii_letters + string.digits, k=8)) for _ in range(3)
        )
        return g.request(path, method=method)[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(10_000)))
    assert statuses.count(404) == 10_000
    counts = g.wait_for(lambda: _counts(g) if sum(_counts(g).values()) == 10_000 else None)
    # Only (method, "", "404"): the path never becomes a label, unknown methods are _OTHER.
    assert {route for _, route, _ in counts} == {""}
    assert {status for _, _, status in counts} == {"404"}
    assert {m for m, _, _ in counts} <= STANDARD_METHODS | {"_OTHER"}
    assert len(counts) <= 9
    every_series = g.metrics()
    assert len(every_series) < 400, "series must not grow with the number of distinct requests"


def test_exposition_passes_promtool_and_has_no_duplicate_family(
    gunicorn_factory: GunicornFactory,
) -> None:
    promtool = require_tool("promtool")
    g = gunicorn_factory("testapp:app", workers=2).start()
    for path in ("/", "/items/1", "/raise-before", "/status/404", "/echo"):
        g.request(path)
    text = g.metrics_text()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    report = (checked.stdout + checked.stderr).decode()
    assert checked.returncode == 0, report
    assert report.strip() == ""
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))
    assert "gunicorn_worker_exits_total" in text


def test_namespace_prefixes_every_metric(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", env={"PROMETHEUS_NAMESPACE": "shop"}).start()
    g.request("/")
    names = {name for name, _ in g.wait_for(g.metrics)}
    assert "shop_http_server_request_duration_seconds_count" in names
    assert "shop_gunicorn_workers" in names
    assert not [n for n in names if not n.startswith("shop_")]


def test_workers_do_not_hold_the_metrics_socket(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", workers=2).start()
    for pid in g.worker_pids():
        ports = {
            c.laddr.port
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert g.metrics_port not in ports
        assert g.app_port in ports


def test_busy_metrics_port_never_blocks_the_app(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app")
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", g.metrics_port))
    blocker.listen()
    try:
        g.start(wait_metrics=False)
        assert g.request("/") == (200, b"hello")
        g.wait_for(lambda: "9" in g.log_text() and "busy" in g.log_text().lower(), timeout=5)
    finally:
        blocker.close()
    # The endpoint retries in the background and takes the port once it is free.
    assert g.wait_for(lambda: g.metrics_response()[0] == 200, timeout=10)
    log = g.log_text().lower()
    assert log.count("busy") == 1 or log.count("address already in use") == 1
    assert g.value("gunicorn_prom_ext_faults_total", kind="endpoint_bind") == 1.0
