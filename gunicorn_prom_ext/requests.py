"""Request metrics: the one recording core behind both ways in (hooks and middleware).

This is the hot path: a few microseconds a request. Everything that can be prepared is
prepared once per label set (file positions, running values); a request then costs a
clock read, a dict lookup and a handful of 8-byte writes into the thread's own file.
Label rules live in labels.py.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from time import perf_counter, time
from typing import Any

from gunicorn_prom_ext.labels import (
    HELP,
    MAX_SERIES,
    NO_RESPONSE_STATUS,
    OTHER,
    OTHER_METHOD,
    OVERFLOW_ROUTE,
    REQUEST_LABELS,
    ROUTE_ENVIRON_KEY,
    SMALL_BODY_SIZES,
    STANDARD_METHODS,
    STATUS_LABELS,
    MetricNames,
    SeriesBudget,
    body_size,
    route_label,
)
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.queue_time import QueueClock, parse_stamp
from gunicorn_prom_ext.storage.files import MetricFile, series_key
from gunicorn_prom_ext.storage.histogram import FileHistogram, histogram_keys


class _Series:
    __slots__ = ("duration", "request_size", "response_size")

    def __init__(
        self, duration: FileHistogram, request_size: FileHistogram, response: FileHistogram
    ) -> None:
        self.duration = duration
        self.request_size = request_size
        self.response_size = response

    def histograms(self) -> tuple[FileHistogram, FileHistogram, FileHistogram]:
        return self.duration, self.request_size, self.response_size

    def observe(self, duration: float, request_size: int, response_size: int) -> None:
        """FileHistogram.observe three times, written out: this runs for every request,
        and the three share one file (one lookup of its doubles, no call frames)."""
        h = self.duration
        doubles = h.file.doubles
        i = bisect_left(h.bounds, duration)
        count = h.counts[i] + 1.0
        h.counts[i] = count
        doubles[h.indexes[i]] = count
        h.sum += duration
        doubles[h.sum_index] = h.sum
        h = self.request_size
        # Most requests have no body: size 0 is always the first bucket (no search).
        i = bisect_left(h.bounds, request_size) if request_size else 0
        count = h.counts[i] + 1.0
        h.counts[i] = count
        doubles[h.indexes[i]] = count
        h.sum += request_size
        doubles[h.sum_index] = h.sum
        h = self.response_size
        i = bisect_left(h.bounds, response_size) if response_size else 0
        count = h.counts[i] + 1.0
        h.counts[i] = count
        doubles[h.indexes[i]] = count
        h.sum += response_size
        doubles[h.sum_index] = h.sum


# (start on perf_counter, method label) of the request this context is serving.
Started = tuple[float, str]


class RequestRecorder:
    """Records the requests one OS thread of a worker serves into that thread's own files.

    Not thread safe, and needs no lock: each OS thread has its own recorder. Greenlets
    (gevent) and coroutines (asgi) share their thread's recorder safely, since nothing
    here yields; for the hooks their start times travel in a ContextVar.

    The hooks' methods (hook_started, hook_finished) are written flat, without helper
    calls: they run for every request, and each Python call costs about 60 ns.
    """

    def __init__(
        self,
        histograms: MetricFile,
        gauges: MetricFile,
        names: MetricNames,
        duration_buckets: Sequence[float],
        body_size_buckets: Sequence[float],
        log: Log,
        *,
        budget: SeriesBudget | None = None,
        queue: QueueClock | None = None,
        one_at_a_time: bool = False,
    ) -> None:
        """``one_at_a_time``: the thread serves one request at a time (sync, gthread), so
        the start time can wait on the recorder instead of in a ContextVar (cheaper)."""
        self._histograms = histograms
        self._gauges = gauges
        self._names = names
        self._duration_bounds = (*duration_buckets, math.inf)
        self._size_bounds = (*body_size_buckets, math.inf)
        self._log = log
        self._budget = budget if budget is not None else SeriesBudget()
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._active: dict[str, list[Any]] = {}  # method -> [index in the gauge file, value]
        self._started: ContextVar[Started | None] = ContextVar(
            "gunicorn_prom_ext_started", default=None
        )
        self._one_at_a_time = one_at_a_time
        self._pending: Started | None = None
        self._queue = queue
        self._queue_key = queue.environ_key if queue is not None else None
        self._queue_histogram: FileHistogram | None = None
        self.epoch = 0  # the storage epoch these files belong to (see worker.py)

    # -- the hooks' way in (pre_request / post_request) --------------------------------

    def hook_started(self, method: str) -> None:
        """pre_request: take the clock, count the request as active."""
        if method not in STANDARD_METHODS:
            method = OTHER_METHOD
        active = self._active.get(method) or self._new_active(method)
        active[1] += 1.0
        self._gauges.doubles[active[0]] = active[1]
        if self._one_at_a_time:
            self._pending = (perf_counter(), method)
        else:
            self._started.set((perf_counter(), method))

    def hook_finished(self, environ: Mapping[str, Any] | None, resp: Any) -> None:
        """post_request of gunicorn's WSGI workers: the status by the headers_sent rule."""
        now = perf_counter()
        if self._one_at_a_time:
            started, self._pending = self._pending, None
        else:
            started = self._started.get()
            self._started.set(None)
        if started is None:  # pre_request did not run for this request
            return
        start, method = started
        # The gauge first: whatever happens below, the request is no longer active.
        active = self._active[method]
        active[1] -= 1.0
        self._gauges.doubles[active[0]] = active[1]
        try:
            # The client got the status only if the headers went out; otherwise gunicorn
            # answered 500 (or nothing, for a timeout) whatever status_code says. Headers
            # without a status (an app that never called start_response gets a status
            # line of "None" from gunicorn) count as _OTHER.
            if resp is not None and resp.headers_sent:
                status = STATUS_LABELS.get(getattr(resp, "status_code", None), OTHER)
                sent = resp.sent
                if not sent:  # the sendfile path counts nothing in `sent`
                    sent = body_size(resp.response_length)
            else:
                status = NO_RESPONSE_STATUS
                sent = 0
            route: object = ""
            size = 0
            stamp = None
            if environ:
                route = environ.get(ROUTE_ENVIRON_KEY, "")
                length = environ.get("CONTENT_LENGTH")
                if length:
                    known = SMALL_BODY_SIZES.get(length) if type(length) is str else None
                    size = known if known is not None else body_size(length)
                if self._queue_key is not None:
                    stamp = environ.get(self._queue_key)
        except Exception:  # a response or environ not shaped as gunicorn makes them
            status, sent, route, size, stamp = NO_RESPONSE_STATUS, 0, "", 0, None
        key = (method, route if type(route) is str else route_label(route), status)
        series = self._series.get(key) or self._new_series(key)
        series.observe(now - start, size, sent)
        if stamp is not None:
            self._record_queue_time(stamp, now - start)

    # -- the middleware's way in -------------------------------------------------------

    def begin(self, method: str) -> Started:
        """A request starts: take the clock, count it as active."""
        if method not in STANDARD_METHODS:
            method = OTHER_METHOD
        active = self._active.get(method) or self._new_active(method)
        active[1] += 1.0
        self._gauges.doubles[active[0]] = active[1]
        return perf_counter(), method

    def end(
        self,
        started: Started,
        status: str,
        route: object,
        request_size: int,
        response_size: int,
        queue_stamp: object = None,
    ) -> None:
        """The request is over: observe it once in all three histograms, leave the gauge.

        ``status`` is a label (``status_label``), ``route`` whatever the adapter wrote.
        """
        start, method = started
        now = perf_counter()
        active = self._active[method]
        active[1] -= 1.0
        self._gauges.doubles[active[0]] = active[1]
        key = (method, route if type(route) is str else route_label(route), status)
        series = self._series.get(key) or self._new_series(key)
        series.observe(now - start, request_size, response_size)
        if queue_stamp is not None and self._queue is not None:
            self._record_queue_time(queue_stamp, now - start)

    # -- files -------------------------------------------------------------------------

    def publish_idle(self, methods: Iterable[str]) -> None:
        """Expose the active gauge (and the queue time histogram) at 0 before any request:
        dashboards are not blank, and the first requests are an increase rate() sees."""
        for method in methods:
            if method not in self._active:
                self._new_active(method)
        if self._queue is not None and self._queue_histogram is None:
            self._queue_histogram = self._new_queue_histogram()

    def write_into(self, histograms: MetricFile, gauges: MetricFile) -> None:
        """Write every value, kept in memory, into these (new) files.

        Safe from another thread than the recorder's own: it only reads the running
        values (a value read while the owner updates it is at most one request behind,
        and the owner rewrites its files itself at its next request).
        """
        series = list(self._series.values())
        keys = [key for s in series for h in s.histograms() for key in h.keys]
        queue = self._queue_histogram
        if queue is not None:
            keys += queue.keys
        histograms.make_room(keys)
        for s in series:
            for histogram in s.histograms():
                histogram.write_into(histograms)
        if queue is not None:
            queue.write_into(histograms)
        for method, (_, value) in list(self._active.items()):
            gauges.write(gauges.position(self._active_key(method)), value)

    def relocate(self, histograms: MetricFile, gauges: MetricFile) -> None:
        """Move to new files (the old ones went away). Only from the recorder's own thread."""
        self.write_into(histograms, gauges)
        for series in self._series.values():
            for histogram in series.histograms():
                histogram.place(histograms)
        if self._queue_histogram is not None:
            self._queue_histogram.place(histograms)
        for method, entry in self._active.items():
            entry[0] = gauges.position(self._active_key(method)) >> 3
        if self._queue is not None:
            self._queue.relocate()
        self._histograms, self._gauges = histograms, gauges

    @property
    def queue_header(self) -> bytes | None:
        """The queue-time header as an ASGI header name, if queue time is recorded."""
        return self._queue.asgi_header if self._queue is not None else None

    @property
    def queue_environ_key(self) -> str | None:
        """The queue-time header's WSGI environ key, if queue time is recorded."""
        return self._queue_key

    @property
    def files(self) -> tuple[MetricFile, MetricFile]:
        return self._histograms, self._gauges

    def close(self) -> None:
        self._histograms.close()
        self._gauges.close()

    # -- internals ---------------------------------------------------------------------

    def _record_queue_time(self, stamp: object, elapsed: float) -> None:
        """From the proxy's stamp to pre_request (``elapsed`` seconds ago)."""
        seconds = parse_stamp(stamp)
        if seconds is None:
            return  # missing or malformed: nothing recorded
        waited = time() - elapsed - seconds
        if waited < 0.0:  # the proxy's clock runs ahead of ours
            assert self._queue is not None
            self._queue.count_skew()
            waited = 0.0
        h = self._queue_histogram
        if h is None:
            h = self._queue_histogram = self._new_queue_histogram()
        # FileHistogram.observe, written out: one call frame less per stamped request.
        i = bisect_left(h.bounds, waited)
        count = h.counts[i] + 1.0
        h.counts[i] = count
        doubles = h.file.doubles
        doubles[h.indexes[i]] = count
        h.sum += waited
        doubles[h.sum_index] = h.sum

    def _new_queue_histogram(self) -> FileHistogram:
        name, bounds = self._names.queue, self._duration_bounds
        return FileHistogram(self._histograms, name, HELP["queue"], bounds, {})

    def _active_key(self, method: str) -> str:
        name = self._names.active
        return series_key(name, name, {"http_request_method": method}, HELP["active"])

    def _new_active(self, method: str) -> list[Any]:
        entry = self._active[method] = [self._gauges.position(self._active_key(method)) >> 3,
                                        0.0]  # fmt: skip
        return entry

    def _new_series(self, key: tuple[str, str, str]) -> _Series:
        method, route, status = key
        label = route_label(route)
        if label != route:  # a route no template would have: its label set is elsewhere
            key = (method, label, status)
            known = self._series.get(key)
            if known is not None:
                return known
        admitted = self._budget.admit(key)
        if not admitted:
            if admitted is None:
                self._warn_overflow()
            key = (method, OVERFLOW_ROUTE, status)
            known = self._series.get(key)
            if known is not None:
                return known
        labels = dict(zip(REQUEST_LABELS, key, strict=True))
        names, file = self._names, self._histograms
        specs = (
            (names.duration, HELP["duration"], self._duration_bounds),
            (names.request_size, HELP["request_size"], self._size_bounds),
            (names.response_size, HELP["response_size"], self._size_bounds),
        )
        # All or nothing: a full disk must not leave a label set half in the file.
        file.make_room(k for spec in specs for k in histogram_keys(*spec, labels))
        duration, request, response = (FileHistogram(file, *spec, labels) for spec in specs)
        series = self._series[key] = _Series(duration, request, response)
        return series

    def _warn_overflow(self) -> None:
        self._log.warning(
            "gunicorn-prom-ext: more than %d request label sets in this worker; further "
            "routes are recorded as %r. Is %r set to raw paths instead of route templates?",
            MAX_SERIES,
            OVERFLOW_ROUTE,
            ROUTE_ENVIRON_KEY,
        )
