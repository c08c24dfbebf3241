"""The second way in: a middleware around the app, for workers that call no request hooks.

Installed by the hooks themselves in post_worker_init (the loaded app is ``worker.wsgi``
or ``worker.asgi`` then, before the worker serves), so nothing is wired by hand. Both
middlewares record through the same RequestRecorder as the hooks, with the same labels
and status rule: the status the client got, 500 when no status line went out.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from gunicorn_prom_ext.labels import NO_RESPONSE_STATUS, ROUTE_ENVIRON_KEY, body_size, status_label
from gunicorn_prom_ext.requests import RequestRecorder, Started

if TYPE_CHECKING:
    from gunicorn_prom_ext.recorders import ThreadRecorders

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# uvicorn's choice (uvicorn._compat): asyncio's before 3.14 also sees asgiref's marker.
_iscoroutinefunction: Callable[[Any], bool] = (
    inspect.iscoroutinefunction if sys.version_info >= (3, 14) else asyncio.iscoroutinefunction
)


def is_asgi3(app: object) -> bool:
    """Whether uvicorn runs ``app`` as an ASGI 3 app (else as ASGI 2), by uvicorn's own rule
    (``uvicorn.config.Config.load``): a class is ASGI 3 when its instances are awaitable, a
    function when it is a coroutine function, anything else when its ``__call__`` is one."""
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.isfunction(app):
        return _iscoroutinefunction(app)
    # getattr, as uvicorn does: an instance's own __call__ attribute counts too.
    return _iscoroutinefunction(getattr(app, "__call__", None))  # noqa: B004


def wrap_app(
    app: Any, way: str, recorders: ThreadRecorders, *, runs_asgi2: bool = False
) -> Any | None:
    """The app wrapped for ``way`` ("asgi" or "wsgi"), to be run exactly as the server
    would run the app itself; None if it cannot be measured.

    ``runs_asgi2``: the server (uvicorn) runs an app that is not ASGI 3 as ASGI 2; the
    wrapper then calls it that way. gunicorn's asgi worker calls any app as ASGI 3."""
    if not callable(app):
        return None
    if way == "asgi":
        if runs_asgi2 and not is_asgi3(app):
            app = Asgi2Caller(app)
        return AsgiRecorder(app, recorders)
    tornado = _tornado_kind(app)
    if tornado == "application":
        return None  # served by tornado itself, not through WSGI: nothing to wrap
    if tornado == "wsgi_container":
        # gunicorn's tornado worker serves a WSGIContainer as it is: wrap the WSGI app in it.
        app.wsgi_application = WsgiRecorder(app.wsgi_application, recorders)
        return app
    return WsgiRecorder(app, recorders)


def _tornado_kind(app: object) -> str | None:
    """What gunicorn's tornado worker serves without a WSGIContainer of its own: a
    ``tornado.web.Application`` or a ``WSGIContainer`` (wrapping either as a WSGI app
    would hand tornado something it calls with the wrong arguments)."""
    web, wsgi = sys.modules.get("tornado.web"), sys.modules.get("tornado.wsgi")
    if web is not None and isinstance(app, web.Application):
        return "application"
    if wsgi is not None and isinstance(app, wsgi.WSGIContainer):
        return "wsgi_container"
    return None


class Asgi2Caller:
    """An ASGI 2 app called as uvicorn calls one (its ASGI2Middleware)."""

    def __init__(self, app: Callable[[Scope], Any]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


class AsgiRecorder:
    """ASGI 3 middleware: records every ``http`` request; lifespan and websockets pass."""

    def __init__(self, app: AsgiApp, recorders: ThreadRecorders) -> None:
        self.app = app
        self._recorders = recorders
        self.requests = 0  # http requests seen: what uvicorn counts for --max-requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        recorder = self._recorders.current()
        try:
            started = recorder.begin(str(scope.get("method", "")))
        except Exception as exc:
            self._recorders.failed("the ASGI middleware", exc)
            await self.app(scope, receive, send)
            return
        # The status the app started, body bytes sent, whether a body message went out.
        response: list[Any] = [None, 0, False]

        async def send_noting(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                response[0] = message.get("status")
            elif kind == "http.response.body":
                body = message.get("body")
                if isinstance(body, bytes | bytearray | memoryview):  # else the server says
                    response[1] += len(body)
                await send(message)
                # As with WSGI, the status went out with the first body message: gunicorn's
                # asgi worker holds the headers until then, and an app that fails before
                # it leaves the client a 500 or nothing, never the status it started.
                response[2] = True
                return
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        finally:
            self._finish(recorder, started, scope, response)

    def _finish(
        self, recorder: RequestRecorder, started: Started, scope: Scope, response: list[Any]
    ) -> None:
        try:
            sent = response[0] is not None and response[2]
            status = status_label(response[0]) if sent else NO_RESPONSE_STATUS
            request_size, stamp = _from_headers(scope.get("headers"), recorder)
            route = scope.get(ROUTE_ENVIRON_KEY)
        except Exception:  # a scope not shaped as servers make them: still counted
            status, request_size, stamp, route = NO_RESPONSE_STATUS, 0, None, None
        try:
            recorder.end(started, status, route, request_size, body_size(response[1]), stamp)
        except Exception as exc:
            self._recorders.failed("the ASGI middleware", exc)
        self._recorders.after_request(recorder)


def _from_headers(headers: object, recorder: RequestRecorder) -> tuple[int, object]:
    """(request body size, queue stamp) from an ASGI scope's headers."""
    wanted = recorder.queue_header
    size, stamp = 0, None
    if isinstance(headers, list | tuple):
        for item in headers:
            if not isinstance(item, list | tuple) or len(item) != 2:
                continue
            name = item[0]
            if name == b"content-length" and isinstance(item[1], bytes):
                size = body_size(item[1].decode("latin-1"))
            elif wanted is not None and name == wanted:
                stamp = item[1]
    return size, stamp


class WsgiRecorder:
    """WSGI middleware: records each request when the server closes its response."""

    def __init__(self, app: WsgiApp, recorders: ThreadRecorders) -> None:
        self.app = app
        self._recorders = recorders

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        recorder = self._recorders.current()
        try:
            started = recorder.begin(str(environ.get("REQUEST_METHOD", "")))
        except Exception as exc:
            self._recorders.failed("the WSGI middleware", exc)
            return self.app(environ, start_response)
        status: list[str] = []

        def start_noting(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status[:] = [status_line]
            return start_response(status_line, headers, exc_info)

        def finish(sent: int, body_started: bool) -> None:
            try:
                code: object = None
                if status and body_started:
                    head = status[0].split(" ", 1)[0]
                    code = int(head) if head.isascii() and head.isdigit() else None
                label = status_label(code) if code is not None else NO_RESPONSE_STATUS
                stamp = environ.get(recorder.queue_environ_key or "")
                request_size = body_size(environ.get("CONTENT_LENGTH"))
                route = environ.get(ROUTE_ENVIRON_KEY)
            except Exception:  # an environ not shaped as servers make them: still counted
                label, stamp, request_size, route = NO_RESPONSE_STATUS, None, 0, None
            try:
                recorder.end(started, label, route, request_size, body_size(sent), stamp)
            except Exception as exc:
                self._recorders.failed("the WSGI middleware", exc)
            self._recorders.after_request(recorder)

        try:
            body = self.app(environ, start_noting)
        except BaseException:
            finish(0, False)
            raise
        return _CountingBody(body, finish)


class _CountingBody:
    """The app's body, counted as it goes out; the request is recorded on close()."""

    def __init__(self, body: Iterable[bytes], finish: Callable[[int, bool], None]) -> None:
        self._body = body
        self._chunks: Iterator[bytes] = iter(body)
        self._finish: Callable[[int, bool], None] | None = finish
        self._sent = 0
        self._started = False

    def __iter__(self) -> _CountingBody:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._started = True  # an empty body still sends the status line
            raise
        self._started = True
        self._sent += len(chunk)
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            finish, self._finish = self._finish, None
            if finish is not None:
                finish(self._sent, self._started)
