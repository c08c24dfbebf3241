"""A recorder per OS thread of a worker, and what keeps their files in place.

Each OS thread of a worker records into files of its own, so the request path takes no
lock. Threads are told apart by an OS thread id that neither gevent nor eventlet patch: a
config file that monkey-patches ``threading`` before the hooks are installed turns
``threading.local`` into a per-greenlet store, and a recorder per greenlet would mean two
files per request.

Files can go away under a worker (the directory removed, a file set aside as corrupt) or
never be made (a full disk): every value lives in memory too, so nothing recorded is lost,
and files are written again from memory as soon as they can be.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable

from gunicorn_prom_ext.faults import Faults
from gunicorn_prom_ext.labels import HELP, OTHER_METHOD, STANDARD_METHODS, MetricNames, SeriesBudget
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.queue_time import QueueClock
from gunicorn_prom_ext.requests import RequestRecorder
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.storage.directory import StorageEpoch
from gunicorn_prom_ext.storage.files import MetricFile, metric_file_path

FULL_DISK_MESSAGE = (
    "the metrics directory is full (%s): requests are served but not all recorded; the "
    'loss is counted in gunicorn_prom_ext_faults_total{kind="storage_full"} and recording '
    "resumes when space returns"
)
# After a recorder could not be made (a full disk, a missing directory), a thread tries
# again at most this often rather than on every request.
_RETRY_SECONDS = 1.0
# How often a worker looks whether its files went away (see ThreadRecorders.watch).
_WATCH_SECONDS = 1.0
# The epoch of a recorder whose files could not be made: never equal to a real one.
DETACHED = -1


def os_thread_ident() -> Callable[[], int]:
    """A function naming the OS thread it runs in, cheaply (no system call).

    gevent and eventlet replace ``threading.get_ident`` with one that names the greenlet
    when they patch threading; their originals are taken back from them. Call this after
    any patching a config file does (post_fork): the function object, once taken, stays
    the original even if the worker class patches later (gevent's worker patches in
    init_process).
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        original: Callable[[], int] = monkey.get_original("_thread", "get_ident")
        return original
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        original = patcher.original("_thread").get_ident
        return original
    return _thread.get_ident


class ThreadRecorders:
    """One RequestRecorder per OS thread of this worker, made on the thread's first request."""

    def __init__(
        self,
        settings: Settings,
        directory: str,
        epoch: StorageEpoch,
        faults: Faults,
        log: Log,
        *,
        one_request_per_thread: bool = False,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._one_at_a_time = one_request_per_thread
        self._epoch_view = epoch.view
        self._faults = faults
        self.fault_counters = faults.counters
        self._log = log
        self._names = MetricNames(settings.namespace)
        self._budget = SeriesBudget()
        self.by_thread: dict[int, RequestRecorder] = {}
        self.thread_ident = os_thread_ident()
        self._numbers = itertools.count()
        self._retry_at = 0.0
        self._relocating = threading.Lock()  # only taken when files went away

    def current(self) -> RequestRecorder:
        """This thread's recorder, made on its first request."""
        recorder = self.by_thread.get(self.thread_ident())
        if recorder is None:
            recorder = self._new()
        return recorder

    def get(self) -> RequestRecorder | None:
        """This thread's recorder if it has one (for post_request: pre_request made it)."""
        return self.by_thread.get(self.thread_ident())

    def after_request(self, recorder: RequestRecorder) -> None:
        """Cheap checks after each request: files to write anew, fault counts to write."""
        if recorder.epoch != self._epoch_view[0]:
            self._relocate_all(recorder)
        counters = self._faults.counters
        if counters is not None and counters.pending:  # counted while the disk was full
            with contextlib.suppress(OSError):
                counters.flush()

    def failed(self, where: str, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            self._faults.error("storage_full", self._log, "full", FULL_DISK_MESSAGE, exc)
        else:
            self._faults.count("request")
            if self._faults.first_time("request", where):
                self._log.error(
                    "gunicorn-prom-ext: %s failed (%s: %s); further failures counted in "
                    'gunicorn_prom_ext_faults_total{kind="request"}',
                    where, type(exc).__name__, exc,
                )  # fmt: skip

    def publish_idle(self) -> None:
        """Give the active-requests gauge its series at 0 from the worker's start."""
        recorder = self.current()
        if recorder is not None:
            with contextlib.suppress(OSError):
                recorder.publish_idle(sorted(STANDARD_METHODS | {OTHER_METHOD}))

    def _new(self) -> RequestRecorder:
        """A recorder for this thread. When its files cannot be made (the directory is
        gone, the disk full) it starts detached, in memory only: nothing it records is
        lost, and its values go into files as soon as they can be made."""
        settings, names = self._settings, self._names
        ident = f"{os.getpid()}-{next(self._numbers)}"
        queue = None
        if settings.queue_time_header:
            queue = QueueClock(
                settings.queue_time_header,
                metric_file_path(self._directory, "counter", ident),
                names.queue_skew,
                HELP["queue_skew"],
            )
        paths = (metric_file_path(self._directory, "histogram", ident),
                 metric_file_path(self._directory, "gauge_livesum", ident))  # fmt: skip
        try:
            histograms, gauges = (MetricFile(path) for path in paths)
            epoch = self._epoch_view[0]
        except OSError as exc:
            self.failed("creating this thread's metric files", exc)
            histograms, gauges = (MetricFile(path, detached=True) for path in paths)
            epoch = DETACHED
        recorder = RequestRecorder(
            histograms=histograms,
            gauges=gauges,
            names=names,
            duration_buckets=settings.duration_buckets,
            body_size_buckets=settings.body_size_buckets,
            log=self._log,
            budget=self._budget,
            queue=queue,
            one_at_a_time=self._one_at_a_time,
        )
        recorder.epoch = epoch
        self.by_thread[self.thread_ident()] = recorder
        return recorder

    def _relocate_all(self, own: RequestRecorder) -> None:
        """This thread's files went away, or never were: move its recorder to new ones."""
        if own.epoch == DETACHED and time.monotonic() < self._retry_at:
            return  # tried less than a second ago: a full disk stays full for a while
        with self._relocating:
            epoch = self._epoch_view[0]
            try:
                if not all(f.in_place() for f in own.files):
                    histograms, gauges = (MetricFile(f.path, fresh=True) for f in own.files)
                    own.relocate(histograms, gauges)
                own.epoch = epoch
                if self.fault_counters is not None:
                    self.fault_counters.relocate()
            except OSError as exc:
                self._retry_at = time.monotonic() + _RETRY_SECONDS
                own.epoch = DETACHED
                self.failed("rewriting this thread's metric files", exc)

    def watch(self, interval: float = _WATCH_SECONDS) -> None:
        """Rewrite every thread's files soon after they went away, busy or idle.

        A daemon thread (a greenlet under gevent or eventlet) looks every ``interval``
        seconds: a thread that serves no request (an idle gthread pool thread, a worker
        that gets no traffic) would otherwise show nothing until it does. It writes new
        files from the running values; each thread moves over to them itself at the end
        of its next request.
        """
        seen = self._epoch_view[0]

        def run() -> None:
            nonlocal seen
            while True:
                time.sleep(interval)
                detached = any(r.epoch == DETACHED for r in list(self.by_thread.values()))
                if self._epoch_view[0] != seen or detached:
                    seen = self._epoch_view[0]
                    self._rewrite_others()

        threading.Thread(target=run, name="gunicorn-prom-ext-watch", daemon=True).start()

    def _rewrite_others(self) -> None:
        with self._relocating:
            try:
                for recorder in list(self.by_thread.values()):
                    if not all(f.in_place() for f in recorder.files) and not all(
                        os.path.exists(f.path) for f in recorder.files
                    ):
                        histograms, gauges = (
                            MetricFile(f.path, fresh=True) for f in recorder.files
                        )
                        recorder.write_into(histograms, gauges)
                if self.fault_counters is not None:
                    self.fault_counters.relocate()
            except OSError as exc:
                self.failed("rewriting the metric files", exc)
