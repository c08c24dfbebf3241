"""Name the matched URL pattern for the request metrics.

Put it at the top of ``MIDDLEWARE`` (system check ``django_app.W001`` says when it is
missing). After the view ran it writes the route template Django matched, e.g.
``/items/<int:pk>``, into the WSGI environ, where the core's ``post_request`` hook reads
it as the ``http_route`` label. A request no pattern matched (404 from the resolver)
gets no route: the label is empty, never the raw path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn_prom_ext.requests import ROUTE_ENVIRON_KEY


def route_label(route: str) -> str:
    """Django's ``ResolverMatch.route`` as a label: with a leading slash, so the root
    pattern (``""``) reads ``/`` and stays apart from unresolved requests (empty);
    a regex pattern's leading ``^`` dropped."""
    return "/" + route.removeprefix("^")


class RouteMiddleware:
    """Old-style-free, sync-only middleware (gunicorn's WSGI workers)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        try:
            return self.get_response(request)
        finally:
            # The resolver ran inside get_response; an exception the view raised has
            # already become Django's 500 response, with resolver_match still set.
            match = getattr(request, "resolver_match", None)
            environ = getattr(request, "environ", None)
            if match is not None and environ is not None:
                route = match.route
                if isinstance(route, str):
                    environ[ROUTE_ENVIRON_KEY] = route_label(route)
