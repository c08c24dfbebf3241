"""The ASGI middleware against apps that fail part-way and clients that leave part-way.

Once, an app that failed after ``http.response.start`` and before its first body message
was counted with the status it had started (200), while gunicorn's asgi worker, which
holds the headers until the first body message, sent the client nothing. Now the rule is
the WSGI one: the status counts once a body message went out; before that, 500.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from harness import Gunicorn, status_of
from smoke_cases import installed_gunicorn

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
COUNT = "http_server_request_duration_seconds_count"
WORKERS = {"asgi": "asgi", "uvicorn-worker": "uvicorn_worker.UvicornWorker"}


def _count(g: Gunicorn, status: str) -> float:
    return g.sum_values(COUNT, http_route="/x", http_response_status_code=status)


# path -> (what the client gets under gunicorn's asgi worker, under uvicorn's; the label)
CASES = {
    # Failed before a body message went out: gunicorn still held the headers (the client
    # gets nothing); uvicorn had sent the status line and cuts the body short. Both 500,
    # as a WSGI app failing at the same point is counted.
    "/raise-after-start": ("RemoteDisconnected", "IncompleteRead", "500"),
    "/start-only": ("RemoteDisconnected", "IncompleteRead", "500"),
    "/no-response": (500, 500, "500"),
    # The status went out with the first body message: the client got it.
    "/raise-midstream": ("IncompleteRead", "IncompleteRead", "200"),
    "/ok": (200, 200, "200"),
    "/stream": (200, 200, "200"),
}


@pytest.mark.parametrize("worker", list(WORKERS), ids=list(WORKERS))
def test_asgi_failures_and_disconnects_are_counted_as_the_client_saw_them(
    gunicorn_factory: GunicornFactory, worker: str
) -> None:
    if worker == "asgi" and installed_gunicorn() < (24, 0):
        pytest.skip("gunicorn's asgi worker came with gunicorn 24")
    g = gunicorn_factory("hostile_asgi:app", "-k", WORKERS[worker]).start()
    for path, (on_asgi, on_uvicorn, _) in CASES.items():
        assert status_of(g.app_port, path) == (on_asgi if worker == "asgi" else on_uvicorn), path
    # A body that is not bytes: gunicorn sends it anyway, uvicorn refuses it (the app's
    # send raises, no body went out). The middleware never raises into the app itself.
    assert status_of(g.app_port, "/bad-body") == (200 if worker == "asgi" else "IncompleteRead")
    # A client that leaves in the middle of a streamed body, and one that pipelines.
    with socket.create_connection(("127.0.0.1", g.app_port), timeout=10) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(12) == b"HTTP/1.1 200"
    with socket.create_connection(("127.0.0.1", g.app_port), timeout=10) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        time.sleep(0.5)
    labels = [label for _, _, label in CASES.values()]
    bad_body = "200" if worker == "asgi" else "500"
    expected_500 = labels.count("500") + (bad_body == "500")
    expected_200 = labels.count("200") + (bad_body == "200") + 1 + 3  # the leaver, pipelined
    assert g.wait_for(lambda: _count(g, "200") == expected_200, timeout=10)
    assert _count(g, "500") == expected_500
    assert g.value("http_server_active_requests", http_request_method="GET") == 0.0
    assert g.value("gunicorn_prom_ext_faults_total", kind="request") == 0.0
