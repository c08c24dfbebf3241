"""The worker side of the hooks: a recorder per OS thread, and the two ways in.

Each OS thread of a worker records into files of its own, so the request path takes no
lock. Threads are told apart by their native id, which neither gevent nor eventlet
patches: a config file that monkey-patches ``threading`` before the hooks are installed
turns ``threading.local`` into a per-greenlet store, and a recorder per greenlet would
mean two files per request.

Workers that call gunicorn's request hooks record through pre_request/post_request;
the others through a middleware wrapped around the app they loaded (middleware.py).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from gunicorn_prom_ext.faults import Faults, fault_counters
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.queue_time import QueueClock
from gunicorn_prom_ext.requests import (
    HELP,
    OTHER_METHOD,
    STANDARD_METHODS,
    MetricNames,
    RequestRecorder,
    SeriesBudget,
)
from gunicorn_prom_ext.server import ExitNotes, exit_reason_in_worker
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.storage.directory import StorageEpoch
from gunicorn_prom_ext.storage.files import MetricFile, metric_file_path
from gunicorn_prom_ext.worker_classes import Recording

FULL_DISK_MESSAGE = (
    "the metrics directory is full (%s): requests are served but not all recorded; the "
    'loss is counted in gunicorn_prom_ext_faults_total{kind="storage_full"} and recording '
    "resumes when space returns"
)
# After a recorder could not be made (a full disk, a missing directory), a thread tries
# again at most this often rather than on every request.
_RETRY_SECONDS = 1.0


class ThreadRecorders:
    """One RequestRecorder per OS thread of this worker, made on the thread's first request."""

    def __init__(
        self,
        settings: Settings,
        directory: str,
        epoch: StorageEpoch,
        faults: Faults,
        log: Log,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._epoch = epoch
        self._epoch_view = epoch.view
        self._faults = faults
        self._log = log
        self._names = MetricNames(settings.namespace)
        self._budget = SeriesBudget()
        self._recorders: dict[int, RequestRecorder] = {}
        self._epochs: dict[int, int] = {}
        self._numbers = itertools.count()
        self._retry_at = 0.0

    def current(self) -> RequestRecorder | None:
        """This thread's recorder; None while one cannot be made (counted, logged once)."""
        recorder = self._recorders.get(threading.get_native_id())
        if recorder is None:
            recorder = self._new()
        return recorder

    def get(self) -> RequestRecorder | None:
        """This thread's recorder if it has one (for post_request: pre_request made it)."""
        return self._recorders.get(threading.get_native_id())

    def after_request(self, recorder: RequestRecorder) -> None:
        """Cheap checks after each request: files to move, fault counts to write."""
        thread = threading.get_native_id()
        if self._epoch_view[0] != self._epochs.get(thread):
            self._relocate(thread, recorder)
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

    def _new(self) -> RequestRecorder | None:
        if time.monotonic() < self._retry_at:
            return None
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
        try:
            recorder = RequestRecorder(
                histograms=MetricFile(metric_file_path(self._directory, "histogram", ident)),
                gauges=MetricFile(metric_file_path(self._directory, "gauge_livesum", ident)),
                names=names,
                duration_buckets=settings.duration_buckets,
                body_size_buckets=settings.body_size_buckets,
                log=self._log,
                budget=self._budget,
                queue=queue,
            )
        except OSError as exc:
            self._retry_at = time.monotonic() + _RETRY_SECONDS
            self.failed("creating this thread's metric files", exc)
            return None
        thread = threading.get_native_id()
        self._recorders[thread] = recorder
        self._epochs[thread] = self._epoch_view[0]
        return recorder

    def _relocate(self, thread: int, recorder: RequestRecorder) -> None:
        """The master saw files go away: write this thread's values into new files."""
        self._epochs[thread] = self._epoch_view[0]
        if all(f.in_place() for f in recorder.files):
            return
        histograms, gauges = (MetricFile(f.path, fresh=True) for f in recorder.files)
        try:
            recorder.relocate(histograms, gauges)
        except OSError as exc:
            self.failed("rewriting this thread's metric files", exc)
        if self._faults.counters is not None:
            self._faults.counters.relocate()


class WorkerSide:
    """Everything the hooks do in one worker process."""

    def __init__(
        self,
        settings: Settings,
        directory: str,
        epoch: StorageEpoch,
        notes: ExitNotes,
        recording: Recording,
        log: Log,
    ) -> None:
        self._notes = notes
        self._recording = recording
        self.faults = Faults(fault_counters(directory, settings.namespace))
        # Made now, while there may be room: a full disk later can still be counted in it.
        with contextlib.suppress(OSError):
            self.faults.counters.flush()  # type: ignore[union-attr]
        self.recorders = ThreadRecorders(settings, directory, epoch, self.faults, log)
        self._by_hooks = recording.way == "hooks"

    def post_fork(self, worker: Any) -> None:
        self.recorders.publish_idle()

    def post_worker_init(self, worker: Any) -> None:
        """The app is loaded: wrap it when this worker class records through a middleware."""
        if self._by_hooks:
            return
        from gunicorn_prom_ext.middleware import wrap_app

        attribute = self._recording.app_attribute
        app = getattr(worker, attribute, None)
        wrapped = wrap_app(app, self._recording.way, self.recorders)
        if wrapped is None:
            worker.log.warning(
                "gunicorn-prom-ext: the app %r is not an ASGI 3 application: its requests "
                "are not recorded", app,
            )  # fmt: skip
            return
        setattr(worker, attribute, wrapped)
        if self._recording is not None and attribute == "wsgi" and self._recording.way == "asgi":
            self._note_graceful_on_sigterm(worker)

    def pre_request(self, worker: Any, req: Any) -> None:
        if not self._by_hooks:
            return
        recorder = self.recorders.current()
        if recorder is not None:
            try:
                recorder.request_started(req.method)
            except Exception as exc:
                self.recorders.failed("pre_request", exc)

    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        if not self._by_hooks:
            return
        recorder = self.recorders.get()
        if recorder is not None:
            try:
                recorder.request_finished(environ, resp)
            except Exception as exc:
                self.recorders.failed("post_request", exc)
            self.recorders.after_request(recorder)

    def worker_exit(self, worker: Any) -> None:
        self._notes.leave(worker.age, exit_reason_in_worker(worker))

    def _note_graceful_on_sigterm(self, worker: Any) -> None:
        """uvicorn's worker ends a graceful shutdown by re-raising SIGTERM at itself,
        with gunicorn's handler reset to the default: the process dies by the signal and
        worker_exit never runs. Leave the "graceful" note first, then die the same way."""
        notes, age = self._notes, worker.age
        previous: Callable[..., Any] | int | None = signal.getsignal(signal.SIGTERM)
        if previous not in (signal.SIG_DFL, None):
            return  # someone handles SIGTERM already; their exit will reach worker_exit

        def on_sigterm(signum: int, frame: Any) -> None:
            notes.leave(age, "graceful")
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

        signal.signal(signal.SIGTERM, on_sigterm)
