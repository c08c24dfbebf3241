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

import _thread
import contextlib
import errno
import itertools
import os
import signal
import sys
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


RequestHook = Callable[..., None]


def _ignore(*args: Any) -> None:
    return None


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
        self.recorders = ThreadRecorders(
            settings, directory, epoch, self.faults, log,
            one_request_per_thread=recording.one_request_per_thread,
        )  # fmt: skip
        self.pre_request, self.post_request = (
            _request_hooks(self.recorders, epoch) if recording.way == "hooks"
            else (_ignore, _ignore)
        )  # fmt: skip

    def post_fork(self, worker: Any) -> None:
        self.recorders.publish_idle()

    def post_worker_init(self, worker: Any) -> None:
        """The app is loaded: wrap it when this worker class records through a middleware.

        Also where the storage watch starts: after any monkey-patching the worker class
        does, so that under gevent or eventlet it is a greenlet like the rest."""
        self.recorders.watch()
        recording = self._recording
        if recording.way == "hooks":
            return
        from gunicorn_prom_ext.middleware import wrap_app

        app = getattr(worker, recording.app_attribute, None)
        wrapped = wrap_app(app, recording.way, self.recorders)
        if wrapped is None:
            worker.log.warning(
                "gunicorn-prom-ext: the app %r is not an ASGI 3 application: its requests "
                "are not recorded", app,
            )  # fmt: skip
            return
        setattr(worker, recording.app_attribute, wrapped)
        if recording.notes_graceful_sigterm:
            self._note_graceful_on_sigterm(worker)

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


def _request_hooks(
    recorders: ThreadRecorders, epoch: StorageEpoch
) -> tuple[RequestHook, RequestHook]:
    """pre_request and post_request for workers that call them, written for speed: every
    name they use is bound once here, so a request costs no attribute chains."""
    by_thread = recorders.by_thread.get
    ident = recorders.thread_ident
    new = recorders.current
    failed = recorders.failed
    after = recorders.after_request
    epoch_view = epoch.view
    counters = recorders.fault_counters

    def pre_request(worker: Any, req: Any) -> None:
        recorder = by_thread(ident()) or new()
        if recorder is not None:
            try:
                recorder.hook_started(req.method)
            except Exception as exc:
                failed("pre_request", exc)

    def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
        recorder = by_thread(ident())
        if recorder is not None:
            try:
                recorder.hook_finished(environ, resp)
            except Exception as exc:
                failed("post_request", exc)
            if recorder.epoch != epoch_view[0] or (counters is not None and counters.pending):
                after(recorder)

    return pre_request, post_request
