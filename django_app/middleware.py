"""Name the matched URL pattern for the request metrics.

Put it at the top of ``MIDDLEWARE`` (system check ``django_app.W001`` says when it is
missing). After the view ran it writes the route Django matched, e.g. ``/items/<int:pk>``,
under ``ROUTE_ENVIRON_KEY``: into the WSGI environ, where the core's ``post_request``
hook reads it as the ``http_route`` label, or, under an ASGI server, into the ASGI scope
(``request.scope`` is the dict the server passed to the application, so whatever wraps
the application reads it there after the application returned). A ``re_path()`` route
is written as a template (``/snippets/<pk>/``, see ``routes``) unless
``GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES = True``. A request no pattern matched (404 from
the resolver) gets no route: the label is empty, never the raw path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from gunicorn_prom_ext.labels import ROUTE_ENVIRON_KEY

from .conf import raw_regex_routes
from .routes import readable_route_label, route_label

__all__ = ["RouteMiddleware", "route_label"]


class RouteMiddleware:
    """Sync and async capable, so Django never has to switch modes around it: sync under
    gunicorn's WSGI workers, async when the chain is async (an ASGI server)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        # Django builds the chain when it serves its first request, never at import.
        self.label = route_label if raw_regex_routes() else readable_route_label
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        try:
            return self.get_response(request)
        finally:
            # The resolver ran inside get_response; an exception the view raised has
            # already become Django's 500 response, with resolver_match still set.
            self.record(request)

    async def __acall__(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        try:
            return await get_response(request)
        finally:
            self.record(request)

    def record(self, request: Any) -> None:
        match = getattr(request, "resolver_match", None)
        if match is None:
            return
        route = match.route
        if not isinstance(route, str):
            return
        environ = getattr(request, "environ", None)  # WSGIRequest
        if environ is not None:
            environ[ROUTE_ENVIRON_KEY] = self.label(route)
            return
        scope = getattr(request, "scope", None)  # ASGIRequest
        if isinstance(scope, dict):
            scope[ROUTE_ENVIRON_KEY] = self.label(route)
