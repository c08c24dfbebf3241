"""The harness itself, against bare gunicorn: must not depend on the project's hooks."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import gunicorn
import pytest
from harness import GunicornFactory, parse_metrics


@pytest.mark.slow
def test_bare_gunicorn_serves_testapp(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", config=None).start(wait_metrics=False)
    assert g.request("/") == (200, b"hello")
    assert g.request("/items/7") == (200, b"item 7")
    assert g.request("/status/418")[0] == 418
    assert g.request("/status/204") == (204, b"")
    assert g.request("/echo", method="POST", body=b"ping") == (200, b"ping")
    assert g.request("/nope")[0] == 404
    # The app fails before any header went out: gunicorn answers 500 itself.
    assert g.request("/raise-before")[0] == 500
    assert g.request("/raise-after")[0] == 500
    # Headers went out, then the body broke off: the client sees 200 and a truncated body.
    status, body = g.request("/raise-midstream")
    assert status == 200
    assert body.startswith(b"first chunk")
    assert len(g.worker_pids()) == 1
    if gunicorn.version_info >= (25, 1):
        # Per instance, not in ~/.gunicorn; a master thread creates it, maybe a bit later.
        g.wait_for(g.control_socket.exists, timeout=5, message="control socket")
    assert g.stop() == 0
    assert "Booting worker" in g.log_text()


@pytest.mark.slow
def test_killed_worker_gives_no_response(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", config=None).start(wait_metrics=False)
    (worker,) = g.worker_pids()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(g.request, "/sleep/5")
        time.sleep(0.5)  # the request is in the worker by now
        os.kill(worker, signal.SIGKILL)
        # The connection closes without a response.
        assert pending.result(timeout=10) == (None, b"")
    g.wait_for(lambda: g.worker_pids() not in ([], [worker]), message="replacement worker")
    assert g.request("/") == (200, b"hello")


def test_parse_metrics() -> None:
    text = 'a_total{x="1",y="2"} 3\na_total{x="2",y="2"} 4\nb 1.5\n'
    samples = parse_metrics(text)
    assert samples[("a_total", (("x", "1"), ("y", "2")))] == 3.0
    assert samples[("b", ())] == 1.5
