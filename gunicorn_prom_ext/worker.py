"""The worker side of the hooks: the two ways in, and what a worker notes when it exits.

Workers that call gunicorn's request hooks record through pre_request/post_request (the
closures made by ``_request_hooks``, written for speed); the others through a middleware
wrapped around the app they loaded (middleware.py). Both record into the calling OS
thread's recorder (recorders.py).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from typing import Any

from gunicorn_prom_ext.faults import Faults, fault_counters
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.recorders import ThreadRecorders
from gunicorn_prom_ext.server import ExitNotes, exit_reason_in_worker
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.storage.directory import StorageEpoch
from gunicorn_prom_ext.worker_classes import Recording

RequestHook = Callable[..., None]


def ignore(*args: Any) -> None:
    """A request hook that does nothing (the master's, or a middleware worker's)."""
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
        self._middleware: object = None  # the ASGI middleware when it counts requests
        self.pre_request, self.post_request = (
            _request_hooks(self.recorders, epoch) if recording.way == "hooks"
            else (ignore, ignore)
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
        if recording.notes_graceful_sigterm:  # whether or not the app can be wrapped
            self._note_graceful_on_signal(worker)
        from gunicorn_prom_ext.middleware import wrap_app

        app = getattr(worker, recording.app_attribute, None)
        wrapped = wrap_app(app, recording.way, self.recorders, runs_asgi2=recording.runs_asgi2)
        if wrapped is None:
            worker.log.warning(
                "gunicorn-prom-ext: the app %r cannot be wrapped in a %s middleware (this "
                "worker class serves it without one): its requests are not recorded",
                app, recording.way.upper(),
            )  # fmt: skip
            return
        if recording.counts_requests_itself:
            self._middleware = wrapped
        setattr(worker, recording.app_attribute, wrapped)

    def worker_exit(self, worker: Any) -> None:
        served = getattr(self._middleware, "requests", 0)
        self._notes.leave(worker.age, exit_reason_in_worker(worker, served))

    def _note_graceful_on_signal(self, worker: Any) -> None:
        """uvicorn's worker ends a graceful shutdown (SIGTERM from the master, SIGINT from a
        Ctrl-C) by re-raising the signal at itself, with gunicorn's handler reset to the
        default: the process dies by the signal and worker_exit never runs. Leave the
        "graceful" note first, then die the same way."""
        notes, age = self._notes, worker.age

        def on_signal(signum: int, frame: Any) -> None:
            notes.leave(age, "graceful")
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous: Callable[..., Any] | int | None = signal.getsignal(signum)
            if previous in (signal.SIG_DFL, None):  # else someone handles it: worker_exit runs
                signal.signal(signum, on_signal)


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
