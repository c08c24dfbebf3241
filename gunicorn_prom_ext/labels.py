"""Request labels that stay bounded whatever clients send, and the metric names.

The method is one of the standard nine or ``_OTHER``, the status one of 100..599 or
``_OTHER``, the route what an adapter wrote into the environ (never the raw path), and
past ``MAX_SERIES`` label sets per worker new ones are folded into the ``_OTHER`` route.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

# The WSGI environ key (or ASGI scope key) through which a framework adapter (or any
# middleware) names the matched route template, e.g. "/items/<int:pk>". Absent means "no
# route": the label is then empty, never the raw path, so clients cannot mint series.
ROUTE_ENVIRON_KEY = "gunicorn_prom_ext.route"

STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER = "_OTHER"
OTHER_METHOD = OTHER
OVERFLOW_ROUTE = OTHER
# What the client got when no status line went out: gunicorn's own error page, or nothing.
NO_RESPONSE_STATUS = "500"
# A misbehaving adapter could pass raw paths as routes; past this many label sets per
# worker, new routes are folded into OVERFLOW_ROUTE (and logged once).
MAX_SERIES = 2000
# Longer routes are not templates anyone wrote: they count under OVERFLOW_ROUTE.
MAX_ROUTE_LENGTH = 256
# A Content-Length above this (1 TiB) is a lie or a mistake: the size counts as unknown.
MAX_BODY_SIZE = 1 << 40
_MAX_BODY_DIGITS = len(str(MAX_BODY_SIZE))

REQUEST_LABELS = ("http_request_method", "http_route", "http_response_status_code")
STATUS_LABELS: Mapping[object, str] = {code: str(code) for code in range(100, 600)}


class MetricNames:
    """The request metric names, with the optional namespace prefix."""

    def __init__(self, namespace: str) -> None:
        prefix = f"{namespace}_" if namespace else ""
        self.duration = prefix + "http_server_request_duration_seconds"
        self.active = prefix + "http_server_active_requests"
        self.request_size = prefix + "http_server_request_body_size_bytes"
        self.response_size = prefix + "http_server_response_body_size_bytes"
        self.queue = prefix + "http_server_request_queue_duration_seconds"
        self.queue_skew = prefix + "http_server_request_queue_clock_skew"


HELP = {
    "duration": "Duration of HTTP server requests.",
    "active": "Number of active HTTP server requests.",
    "request_size": "Size of HTTP server request bodies.",
    "response_size": "Size of HTTP server response bodies.",
    "queue": "Time requests waited between the front proxy's stamp and the worker.",
    "queue_skew": "Requests whose proxy stamp lay in the future (clock skew); counted as 0 s.",
}


def status_label(code: object) -> str:
    """The label of a status the client got; anything outside 100..599 is ``_OTHER``."""
    return STATUS_LABELS.get(code, OTHER) if type(code) is int else OTHER


# The Content-Length of most requests, already parsed: a dict lookup instead of a call
# to body_size (about 100 ns less on the request path).
SMALL_BODY_SIZES: dict[str, int] = {str(n): n for n in range(1024)}


def body_size(value: object) -> int:
    """A Content-Length as bytes; 0 (unknown) unless a plain ASCII number up to 1 TiB."""
    if type(value) is str:
        if value.isdigit() and value.isascii() and len(value) <= _MAX_BODY_DIGITS:
            size = int(value)
            return size if size <= MAX_BODY_SIZE else 0
        return 0
    if type(value) is int and 0 <= value <= MAX_BODY_SIZE:
        return value
    return 0


def route_label(route: object) -> str:
    """An adapter's route as a label: a str of a sane length that encodes as UTF-8."""
    if type(route) is not str:
        return OVERFLOW_ROUTE if route is not None else ""
    if len(route) > MAX_ROUTE_LENGTH:
        return OVERFLOW_ROUTE
    if not route.isascii():
        try:
            route.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates would break the whole exposition
            return OVERFLOW_ROUTE
    return route


class SeriesBudget:
    """The label sets one worker has made, shared by its threads' recorders.

    Consulted only when a recorder meets a label set new to it, never per request.
    """

    def __init__(self, limit: int = MAX_SERIES) -> None:
        self._limit = limit
        self._admitted: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self.overflowed = False

    def admit(self, key: tuple[str, str, str]) -> bool | None:
        """True: admitted. False: over the limit. None: over the limit, for the first
        time in this worker (the caller logs it)."""
        with self._lock:
            if key in self._admitted:
                return True
            if len(self._admitted) >= self._limit:
                first = not self.overflowed
                self.overflowed = True
                return None if first else False
            self._admitted.add(key)
            return True
