"""Worker classes at their edges, end to end: what the smoke set's plain runs do not reach.

- uvicorn's worker recycling itself after --max-requests, and dying of a re-raised SIGINT
  after a graceful shutdown (a Ctrl-C): the exit reasons;
- a project's own subclass of uvicorn's worker, and of gunicorn's sync and gthread ones;
  tornado's capacity;
- apps that are not a coroutine function: an ASGI 2 app under uvicorn, a functools.partial
  under gunicorn's asgi worker, a tornado Application and a WSGIContainer under tornado's
  worker — each served exactly as without this package, and recorded where it can be;
- the metrics endpoint over TLS from a master eventlet patched (gunicorn 24 and 25).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from harness import Gunicorn, GunicornFactory, require_tool
from smoke_cases import BY_ID, installed_gunicorn

pytestmark = pytest.mark.slow

FAST = ("--graceful-timeout", "2")
UVICORN = ("-k", "uvicorn_worker.UvicornWorker")
COUNT = "http_server_request_duration_seconds_count"
EXITS = "gunicorn_worker_exits_total"
RequestKey = tuple[str, str, str]  # method, route, status


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        require_tool(f"python module {name}")  # skipped here, a failure in CI


def counts(g: Gunicorn) -> dict[RequestKey, int]:
    out: dict[RequestKey, int] = {}
    for (name, labels), value in g.metrics().items():
        if name == COUNT and value:
            d = dict(labels)
            key = (d["http_request_method"], d["http_route"], d["http_response_status_code"])
            out[key] = int(value)
    return out


def exits(g: Gunicorn) -> dict[str, int]:
    """Exit reasons with a non-zero count."""
    return {
        dict(labels)["reason"]: int(value)
        for (name, labels), value in g.metrics().items()
        if name == EXITS and value
    }


def replaced(g: Gunicorn, old: int, exited: int = 1) -> dict[str, int]:
    """Wait until worker ``old`` is gone, a new one serves and ``exited`` exits are counted."""

    def done() -> dict[str, int] | None:
        pids = g.worker_pids()
        seen = exits(g)
        if pids and old not in pids and sum(seen.values()) == exited:
            return seen
        return None

    return g.wait_for(done, timeout=20, message=f"worker {old} replaced, its exit counted")


def counted(g: Gunicorn, expected: dict[RequestKey, int]) -> None:
    g.wait_for(lambda: counts(g) == expected, timeout=10, message=f"counted: {expected}")


# -- uvicorn ----------------------------------------------------------------------------------


def test_uvicorn_recycling_after_max_requests_is_max_requests(
    gunicorn_factory: GunicornFactory,
) -> None:
    """uvicorn enforces --max-requests itself and leaves worker.nr at 0: its exit used to
    be counted graceful."""
    require_module("uvicorn_worker")
    g = gunicorn_factory(
        "smoke_asgi:app", *FAST, *UVICORN, "--max-requests", "2", "--max-requests-jitter", "0"
    ).start()
    first = g.worker_pids()[0]
    for i in range(2):
        assert g.request(f"/items/{i}") == (200, f"item {i}".encode())
    assert replaced(g, first) == {"max_requests": 1}
    assert g.request("/items/2") == (200, b"item 2")
    counted(g, {("GET", "/items/<n>", "200"): 3})


def test_uvicorn_exit_by_a_reraised_sigint_is_graceful(gunicorn_factory: GunicornFactory) -> None:
    """A Ctrl-C sends SIGINT to every process of the terminal's group: uvicorn shuts down
    gracefully, then re-raises SIGINT at itself and dies of it, as it does with SIGTERM."""
    require_module("uvicorn_worker")
    g = gunicorn_factory("smoke_asgi:app", *FAST, *UVICORN).start()
    assert g.request("/items/1") == (200, b"item 1")
    first = g.worker_pids()[0]
    os.kill(first, signal.SIGINT)
    assert replaced(g, first) == {"graceful": 1}
    # Other signals keep their meaning: SIGKILL is still "killed".
    second = g.worker_pids()[0]
    os.kill(second, signal.SIGKILL)
    assert replaced(g, second, exited=2) == {"graceful": 1, "killed": 1}
    counted(g, {("GET", "/items/<n>", "200"): 1})


def test_a_projects_subclass_of_uvicorns_worker_is_recorded(
    gunicorn_factory: GunicornFactory,
) -> None:
    """Recognised by the classes it derives from, not by its own module's name."""
    require_module("uvicorn_worker")
    g = gunicorn_factory(
        "smoke_asgi:app", *FAST, "-k", "uvicorn_subclass.ProjectUvicornWorker"
    ).start()
    assert "requests are recorded by an ASGI middleware around the app" in g.log_text()
    for i in range(3):
        assert g.request(f"/items/{i}") == (200, f"item {i}".encode())
    assert g.request("/status/404") == (404, b"status 404")
    counted(g, {("GET", "/items/<n>", "200"): 3, ("GET", "", "404"): 1})
    first = g.worker_pids()[0]
    g.signal(signal.SIGHUP)
    assert replaced(g, first) == {"graceful": 1}


def test_uvicorn_serves_an_asgi2_app_recorded(gunicorn_factory: GunicornFactory) -> None:
    """uvicorn runs an app that is not ASGI 3 (by its own rule) as ASGI 2: the wrapper
    calls it the same way, so it is served as without the package, and recorded; its
    graceful exits are graceful too."""
    require_module("uvicorn_worker")
    g = gunicorn_factory("asgi_forms:Asgi2App", *FAST, *UVICORN).start()
    assert g.request("/anything") == (201, b"asgi2")
    assert g.request("/anything", method="POST", body=b"x") == (201, b"asgi2")
    counted(g, {("GET", "/form", "201"): 1, ("POST", "/form", "201"): 1})
    first = g.worker_pids()[0]
    g.signal(signal.SIGHUP)
    assert replaced(g, first) == {"graceful": 1}
    assert "cannot be wrapped" not in g.log_text()


# -- gunicorn's asgi worker ------------------------------------------------------------------


def test_gunicorns_asgi_worker_records_a_partial(gunicorn_factory: GunicornFactory) -> None:
    """gunicorn's asgi worker calls whatever it loaded as an ASGI 3 app: a functools.partial
    of a coroutine function is served, and must be recorded too."""
    pytest.importorskip("gunicorn.workers.gasgi")  # gunicorn 24 and later
    g = gunicorn_factory("asgi_forms:partial_app", *FAST, "-k", "asgi").start()
    for _ in range(2):
        assert g.request("/anything") == (201, b"partial")
    counted(g, {("GET", "/form", "201"): 2})


# -- tornado ------------------------------------------------------------------------------------


def test_tornado_serves_its_own_apps_as_without_the_package(
    gunicorn_factory: GunicornFactory,
) -> None:
    """gunicorn's tornado worker serves a tornado Application and a WSGIContainer as they
    are; a WSGI middleware around either made tornado call it with the wrong arguments,
    and every request hung."""
    require_module("tornado")
    g = gunicorn_factory("tornado_apps:application", *FAST, "-k", "tornado").start()
    for i in range(2):
        assert g.request(f"/items/{i}", timeout=5) == (200, f"item {i}".encode())
    assert "cannot be wrapped in a WSGI middleware" in g.log_text()
    assert counts(g) == {}  # served by tornado itself: nothing to record, and said so

    c = gunicorn_factory("tornado_apps:container", *FAST, "-k", "tornado").start()
    for _ in range(2):
        assert c.request("/anything", timeout=5) == (202, b"contained")
    counted(c, {("GET", "/contained", "202"): 2})


# -- capacity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worker_class", "capacity"),
    [("subclassed_workers.ProjectThreadedWorker", 6), ("subclassed_workers.ProjectWorker", 2)],
)
def test_capacity_of_a_projects_worker_subclass(
    gunicorn_factory: GunicornFactory, worker_class: str, capacity: int
) -> None:
    """2 workers with --threads 3: 3 requests at once each for a gthread subclass, 1 for a
    sync one (gunicorn keeps a class not named *SyncWorker, whatever --threads says)."""
    g = gunicorn_factory(
        "smoke_wsgi:app", *FAST, "-k", worker_class, "--threads", "3", workers=2
    ).start()
    assert g.value("gunicorn_worker_capacity") == capacity
    assert g.request("/items/1") == (200, b"item 1")
    counted(g, {("GET", "/items/<n>", "200"): 1})


def test_tornado_capacity_is_one_request_per_worker(gunicorn_factory: GunicornFactory) -> None:
    """tornado runs a WSGI app in its IOLoop, one request at a time: 2 workers serve 2 at
    once, not 2 times worker_connections."""
    require_module("tornado")
    g = gunicorn_factory("smoke_wsgi:app", *FAST, "-k", "tornado", workers=2).start()
    assert g.value("gunicorn_worker_capacity") == 2
    assert g.request("/items/1") == (200, b"item 1")
    counted(g, {("GET", "/items/<n>", "200"): 1})


# -- eventlet ------------------------------------------------------------------------------------


def test_scrapes_and_worker_exits_at_once_in_an_eventlet_master(
    gunicorn_factory: GunicornFactory,
) -> None:
    """gunicorn 24 and 25 patch eventlet into the master: a lock made there was a green
    one, and when a scrape thread and the main loop (a worker's exit) wanted it at once,
    eventlet's hub died ("Cannot switch to a different thread") and scrapes hung."""
    if not BY_ID["eventlet"].exists_in(installed_gunicorn()):
        pytest.skip("this gunicorn has no eventlet worker")
    require_module("eventlet")
    g = gunicorn_factory("smoke_wsgi:app", *FAST, "-k", "eventlet", workers=2).start()
    stop = threading.Event()
    failures: list[object] = []

    def scrape() -> None:
        while not stop.is_set():
            try:
                status = g.metrics_response(timeout=5)[0]
                if status != 200:
                    failures.append(status)
            except Exception as exc:  # a timeout, above all
                failures.append(repr(exc))

    scrapers = [threading.Thread(target=scrape, daemon=True) for _ in range(4)]
    for scraper in scrapers:
        scraper.start()
    kills = 0
    try:
        for _ in range(25):
            pids = g.wait_for(lambda: (lambda p: p if len(p) == 2 else None)(g.worker_pids()))
            victim = pids[0]
            os.kill(victim, signal.SIGKILL)
            kills += 1
            time.sleep(0.2)
    finally:
        stop.set()
        for scraper in scrapers:
            scraper.join(10)
    assert failures == []
    assert "greenlet.error" not in g.log_text()
    assert g.wait_for(lambda: g.value("gunicorn_worker_exits_total", reason="killed") == kills)
    assert g.request("/items/1") == (200, b"item 1")


def test_metrics_over_tls_from_an_eventlet_master(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    """gunicorn 24 and 25 patch eventlet into the master: eventlet's own copy of the
    original ssl module still makes green sockets, and every TLS handshake failed."""
    if not BY_ID["eventlet"].exists_in(installed_gunicorn()):
        pytest.skip("this gunicorn has no eventlet worker")
    require_module("eventlet")
    require_module("trustme")
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    env = {
        "PROMETHEUS_SSL_ENABLED": "true",
        "PROMETHEUS_SSL_CERTFILE": str(certfile),
        "PROMETHEUS_SSL_KEYFILE": str(keyfile),
    }
    extra: tuple[str, ...] = ()
    if installed_gunicorn() >= (25, 0):
        extra = ("--no-control-socket",)  # see test_smoke.start: a gunicorn 25 matter
    g = gunicorn_factory(
        "smoke_wsgi:app", *FAST, "-k", "eventlet", *extra, env=env, workers=2,
        metrics_ssl_context=context,
    )  # fmt: skip
    g.start(timeout=30)
    assert g.metrics_url.startswith("https://")
    for i in range(3):
        assert g.request(f"/items/{i}") == (200, f"item {i}".encode())
    counted(g, {("GET", "/items/<n>", "200"): 3})
    for _ in range(5):  # every scrape, not just the first
        assert g.value("gunicorn_workers") == 2
    assert g.proc is not None
    g.signal(signal.SIGTERM)
    try:
        code = g.proc.wait(12)
    except subprocess.TimeoutExpired:
        pytest.fail("the master ignored SIGTERM for 12 s")
    assert code == 0
