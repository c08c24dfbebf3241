"""Request metrics, recorded in the worker from pre_request and post_request.

This is the hot path: a few microseconds a request. Everything that can be prepared
is prepared once per label set (file positions, running values); a request then costs
a clock read, a dict lookup and a handful of 8-byte writes into the worker's file.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.storage.files import MetricFile, le_label, series_key

# The WSGI environ key through which a framework adapter (or any WSGI middleware) names
# the matched route template, e.g. "/items/<int:pk>". Absent means "no route": the label
# is then empty, never the raw path, so clients cannot mint series.
ROUTE_ENVIRON_KEY = "gunicorn_prom_ext.route"

STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "_OTHER"
OVERFLOW_ROUTE = "_OTHER"
# A misbehaving adapter could still pass raw paths as routes; past this many label sets
# new routes are folded into OVERFLOW_ROUTE (and logged once).
MAX_SERIES = 2000

REQUEST_LABELS = ("http_request_method", "http_route", "http_response_status_code")


class MetricNames:
    """The request metric names, with the optional namespace prefix."""

    def __init__(self, namespace: str) -> None:
        prefix = f"{namespace}_" if namespace else ""
        self.duration = prefix + "http_server_request_duration_seconds"
        self.active = prefix + "http_server_active_requests"
        self.request_size = prefix + "http_server_request_body_size_bytes"
        self.response_size = prefix + "http_server_response_body_size_bytes"


HELP = {
    "duration": "Duration of HTTP server requests.",
    "active": "Number of active HTTP server requests.",
    "request_size": "Size of HTTP server request bodies.",
    "response_size": "Size of HTTP server response bodies.",
}


class _Histogram:
    """One label set of one histogram: bucket and sum positions with running values."""

    __slots__ = ("_bounds", "_counts", "_file", "_positions", "_sum", "_sum_pos")

    def __init__(
        self,
        file: MetricFile,
        name: str,
        help_text: str,
        labels: dict[str, str],
        bounds: Sequence[float],
    ) -> None:
        self._file = file
        self._bounds = list(bounds)
        self._positions: list[int] = []
        self._counts: list[float] = []
        for bound in self._bounds:
            key = series_key(name, name + "_bucket", {**labels, "le": le_label(bound)}, help_text)
            self._positions.append(file.position(key))
            self._counts.append(file.stored_value(key))
        sum_key = series_key(name, name + "_sum", labels, help_text)
        self._sum_pos = file.position(sum_key)
        self._sum = file.stored_value(sum_key)

    def observe(self, value: float) -> None:
        i = bisect_left(self._bounds, value)
        count = self._counts[i] + 1.0
        self._counts[i] = count
        self._file.write(self._positions[i], count)
        self._sum += value
        self._file.write(self._sum_pos, self._sum)


class _Series:
    __slots__ = ("duration", "request_size", "response_size")

    def __init__(self, duration: _Histogram, request_size: _Histogram, response: _Histogram):
        self.duration = duration
        self.request_size = request_size
        self.response_size = response


class RequestRecorder:
    """Records the requests one thread of a worker serves into that thread's own files.

    Not thread safe, and needs no lock: the hooks give each thread its own recorder
    (gthread). Greenlets (gevent) and coroutines (asgi) share their thread's recorder
    safely, since nothing here yields; their start times travel in a ContextVar.
    """

    def __init__(
        self,
        histograms: MetricFile,
        gauges: MetricFile,
        names: MetricNames,
        duration_buckets: Sequence[float],
        body_size_buckets: Sequence[float],
        log: Log,
    ) -> None:
        self._histograms = histograms
        self._gauges = gauges
        self._names = names
        self._duration_bounds = (*duration_buckets, math.inf)
        self._size_bounds = (*body_size_buckets, math.inf)
        self._log = log
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._active: dict[str, list[float]] = {}  # method -> [position, value]
        self._started: ContextVar[tuple[float, str] | None] = ContextVar(
            "gunicorn_prom_ext_started", default=None
        )
        self._overflow_logged = False

    def request_started(self, method: str) -> None:
        if method not in STANDARD_METHODS:
            method = OTHER_METHOD
        self._started.set((time.perf_counter(), method))
        active = self._active.get(method) or self._new_active(method)
        active[1] += 1.0
        self._gauges.write(int(active[0]), active[1])

    def request_finished(self, environ: Mapping[str, Any] | None, resp: Any) -> None:
        started = self._started.get()
        if started is None:  # pre_request did not run for this request
            return
        self._started.set(None)
        start, method = started
        duration = time.perf_counter() - start
        # The client got the status only if the headers went out; otherwise gunicorn
        # answered 500 (or nothing, for a timeout) whatever status_code says.
        if resp is not None and resp.headers_sent:
            status = str(resp.status_code)
            response_size = resp.sent or resp.response_length or 0
        else:
            status = "500"
            response_size = 0
        route = ""
        request_size = 0
        if environ:
            route = environ.get(ROUTE_ENVIRON_KEY) or ""
            length = environ.get("CONTENT_LENGTH")
            if length:
                try:
                    request_size = int(length)
                except ValueError:
                    request_size = 0
        # The gauge first: a new label set needs file space, which a full disk refuses.
        active = self._active.get(method)
        if active is not None:
            active[1] -= 1.0
            self._gauges.write(int(active[0]), active[1])
        series = self._series.get((method, route, status)) or self._new_series(
            (method, route, status)
        )
        series.duration.observe(duration)
        series.request_size.observe(request_size)
        series.response_size.observe(response_size)

    def _new_active(self, method: str) -> list[float]:
        name = self._names.active
        key = series_key(name, name, {"http_request_method": method}, HELP["active"])
        entry = self._active[method] = [float(self._gauges.position(key)), 0.0]
        return entry

    def _new_series(self, key: tuple[str, str, str]) -> _Series:
        method, route, status = key
        if not isinstance(route, str):
            route = str(route)
        if len(self._series) >= MAX_SERIES:
            if not self._overflow_logged:
                self._overflow_logged = True
                self._log.warning(
                    "gunicorn-prom-ext: more than %d request label sets; further routes are "
                    "recorded as %r. Is %r set to raw paths instead of route templates?",
                    MAX_SERIES,
                    OVERFLOW_ROUTE,
                    ROUTE_ENVIRON_KEY,
                )
            route = OVERFLOW_ROUTE
            folded = self._series.get((method, route, status))
            if folded is not None:
                return folded
        labels = dict(zip(REQUEST_LABELS, (method, route, status), strict=True))
        names, file = self._names, self._histograms
        series = _Series(
            _Histogram(file, names.duration, HELP["duration"], labels, self._duration_bounds),
            _Histogram(file, names.request_size, HELP["request_size"], labels, self._size_bounds),
            _Histogram(file, names.response_size, HELP["response_size"], labels, self._size_bounds),
        )
        self._series[(method, route, status)] = series
        return series

    def close(self) -> None:
        self._histograms.close()
        self._gauges.close()
