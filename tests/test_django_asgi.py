"""RouteMiddleware under ASGI: Django's real ASGI application called with a scope dict, as
an ASGI server calls it. The route must land in that very dict."""

from __future__ import annotations

import asyncio
import http.client
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")

import django_testsite

django_testsite.configure()

from asgiref.sync import iscoroutinefunction  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import AsyncRequestFactory, override_settings  # noqa: E402
from harness import Gunicorn  # noqa: E402

from django_app.middleware import RouteMiddleware  # noqa: E402
from gunicorn_prom_ext.labels import ROUTE_ENVIRON_KEY  # noqa: E402

Scope = dict[str, Any]


def http_scope(path: str, method: str = "GET") -> Scope:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip


def call_asgi(app: Any, scope: Scope) -> int:
    """One request through the ASGI application; the response status."""
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        body_read = False
        never = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never  # the client stays connected; Django cancels this listener
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(run())
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    status: int = starts[0]["status"]
    return status


@pytest.fixture
def adaptations() -> Iterator[list[str]]:
    """Django's debug messages about wrapping a handler to switch sync/async mode."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "adapted" in record.getMessage():
                found.append(record.getMessage())

    logger = logging.getLogger("django.request")
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_routes_go_into_the_asgi_scope() -> None:
    app = get_asgi_application()
    cases = [
        ("GET", "/items/7", 200, "/items/<int:pk>"),  # a sync view under ASGI
        ("POST", "/items/7", 201, "/items/<int:pk>"),
        ("GET", "/async/items/7", 200, "/async/items/<int:pk>"),  # an async view
        ("GET", "/legacy/2024/", 200, "/legacy/<year>/"),  # a re_path(), readable
        ("GET", "/boom", 500, "/boom"),  # the view raises: Django's 500, its route
        ("GET", "/async/boom", 500, "/async/boom"),
        ("GET", "/gone", 404, "/gone"),  # Http404 from a matched route
        ("GET", "/", 200, "/"),
    ]
    for method, path, status, route in cases:
        scope = http_scope(path, method)
        assert call_asgi(app, scope) == status, path
        assert scope[ROUTE_ENVIRON_KEY] == route, path
    # Nothing matched: no route, never the raw path.
    scope = http_scope("/no/such/page")
    assert call_asgi(app, scope) == 404
    assert ROUTE_ENVIRON_KEY not in scope


def test_async_chain_needs_no_adapter(adaptations: list[str]) -> None:
    # What get_asgi_application() returns, without its django.setup(), which would
    # configure logging afresh and drop the fixture's handler.
    with override_settings(DEBUG=True):  # Django logs each adaptation only in DEBUG
        app = ASGIHandler()
        WSGIHandler()
    assert adaptations == []
    scope = http_scope("/async/items/1")
    assert call_asgi(app, scope) == 200
    assert scope[ROUTE_ENVIRON_KEY] == "/async/items/<int:pk>"


def test_a_sync_only_middleware_would_need_one(adaptations: list[str]) -> None:
    """The check above can fail: the middleware as it was (sync only) gets an adapter."""
    with override_settings(
        DEBUG=True, MIDDLEWARE=["test_django_asgi.SyncOnlyRouteMiddleware"]
    ):
        ASGIHandler()
    assert adaptations == [
        "Asynchronous handler adapted for middleware test_django_asgi.SyncOnlyRouteMiddleware."
    ]


class SyncOnlyRouteMiddleware(RouteMiddleware):
    async_capable = False


def test_the_middleware_follows_its_handlers_mode() -> None:
    async def async_handler(request: Any) -> str:
        return "async response"

    def sync_handler(request: Any) -> str:
        return "sync response"

    assert iscoroutinefunction(RouteMiddleware(async_handler))
    assert not iscoroutinefunction(RouteMiddleware(sync_handler))

    # In sync mode under ASGI (a sync-only middleware further down the chain) the route
    # still goes into the scope.
    request = AsyncRequestFactory().get("/items/3")
    request.resolver_match = type("Match", (), {"route": "items/<int:pk>"})()
    assert RouteMiddleware(sync_handler)(request) == "sync response"
    assert request.scope[ROUTE_ENVIRON_KEY] == "/items/<int:pk>"
    assert not hasattr(request, "environ")

    request = AsyncRequestFactory().get("/legacy/2000/")
    request.resolver_match = type("Match", (), {"route": "^legacy/(?P<year>[0-9]{4})/$"})()
    assert asyncio.run(RouteMiddleware(async_handler)(request)) == "async response"
    assert request.scope[ROUTE_ENVIRON_KEY] == "/legacy/<year>/"


def test_async_mode_sets_the_route_even_when_the_inner_handler_raises() -> None:
    async def failing(request: Any) -> Any:
        request.resolver_match = type("Match", (), {"route": "boom"})()
        raise RuntimeError("propagated (DEBUG_PROPAGATE_EXCEPTIONS)")

    request = AsyncRequestFactory().get("/boom")
    with pytest.raises(RuntimeError):
        asyncio.run(RouteMiddleware(failing)(request))
    assert request.scope[ROUTE_ENVIRON_KEY] == "/boom"


@pytest.mark.slow
def test_routes_reach_an_asgi_wrapper_under_gunicorns_asgi_worker(
    gunicorn_factory: Callable[..., Gunicorn],
) -> None:
    """Through a real server: gunicorn's own ASGI worker (gunicorn 24 and later) serving
    testsite/asgi.py, whose wrapper reads the route from the scope and shows it as an
    x-route response header."""
    pytest.importorskip("gunicorn.workers.gasgi")
    g = gunicorn_factory(
        "testsite.asgi:application", "-k", "asgi",
        cwd=django_testsite.DJANGO_DIR, config=None,
    )  # fmt: skip
    g.start()

    def get(path: str) -> tuple[int, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", g.app_port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status, response.getheader("x-route")
        finally:
            conn.close()

    assert get("/items/4") == (200, "/items/<int:pk>")
    assert get("/async/items/5") == (200, "/async/items/<int:pk>")
    assert get("/legacy/2020/") == (200, "/legacy/<year>/")
    assert get("/boom") == (500, "/boom")
    assert get("/async/boom") == (500, "/async/boom")
    assert get("/gone") == (404, "/gone")
    assert get("/no/such/page") == (404, None)
