"""The fifteen gunicorn server hooks, and how to chain them with a project's own.

One PrometheusHooks instance serves one gunicorn process tree: the master part (the
multiprocess directory, server state, the endpoint) is set up by the first master hook;
the worker part (the request recorder) by post_fork in each worker.

None of these hooks lets an exception reach gunicorn, where a master-side one would
stop the whole server (FIELD-NOTES §1). The one deliberate exception is a ConfigError
at start-up: gunicorn prints it as one "Error: …" line and exits 1 before serving.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from gunicorn_prom_ext.chaining import HOOK_ARITY, Hook, chain
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.server import ServerState, exit_reason_in_worker
from gunicorn_prom_ext.settings import ConfigError, Problem, Settings
from gunicorn_prom_ext.sources import load_settings
from gunicorn_prom_ext.storage.directory import (
    PRIVATE_DIR_ENV,
    MultiprocDirectory,
    ensure_multiprocess_mode,
    prepare_directory,
    remove_directory,
)
from gunicorn_prom_ext.storage.files import Counters, MetricFile, metric_file_path
from gunicorn_prom_ext.storage.fold import Archive, DirectoryLock, fold_leftovers, fold_process

if TYPE_CHECKING:
    from gunicorn_prom_ext.endpoint import MetricsEndpoint
    from gunicorn_prom_ext.requests import RequestRecorder
    from gunicorn_prom_ext.storage.redis import RedisPusher

FAULTS_METRIC = "gunicorn_prom_ext_faults"
LEFTOVER_SWEEP_SECONDS = 30.0
FAULTS_HELP = "Faults gunicorn-prom-ext contained (logged once each), by kind."


FrameworkSettings = Callable[[Any], Mapping[str, object]]


class PrometheusHooks:
    """The hooks, as bound methods, plus the state they share within one process."""

    def __init__(
        self,
        *,
        framework: Mapping[str, object] | FrameworkSettings | None = None,
        command_line: Mapping[str, object] | None = None,
        framework_source: str = "framework settings",
        gunicorn_settings_applied: bool = False,
    ) -> None:
        """``framework``: a framework's settings, or a function of the arbiter returning
        them, called in the master's first hook (Django's settings cannot be read before).
        ``gunicorn_settings_applied``: a launcher already handed the ``gunicorn`` section
        to gunicorn (no warning that plain gunicorn ignores it)."""
        # Nothing is read here: settings load in the master's first hook, after gunicorn
        # has parsed its own configuration.
        self._framework = framework
        self._command_line = command_line
        self._framework_source = framework_source
        self._gunicorn_settings_applied = gunicorn_settings_applied
        self.settings: Settings | None = None
        self._directory: MultiprocDirectory | None = None
        self._state: ServerState | None = None
        self._endpoint: MetricsEndpoint | None = None
        self._pusher: RedisPusher | None = None
        # One recorder per thread (gthread runs requests in a pool): no lock on the request
        # path, each thread writes files of its own.
        self._local = threading.local()
        self._thread_numbers = itertools.count()
        self._faults: Counters | None = None
        self._archive: Archive | None = None
        self._fold_lock: DirectoryLock | None = None
        self._last_sweep = 0.0
        self._in_worker = False
        self._retry_at = 0.0
        self._logged: set[tuple[str, str]] = set()
        self._added: dict[str, list[Hook]] = {name: [] for name in HOOK_ARITY}
        self._added_pre_request = self._added["pre_request"]
        self._added_post_request = self._added["post_request"]

    def add(self, name: str, fn: Hook) -> None:
        """Run ``fn`` with gunicorn's arguments whenever this hook runs, from now on.

        For hooks that become known late, from inside the served app (a Flask extension
        under plain gunicorn: in each worker, or in the master with --preload). They run
        after this package's part, except for worker_exit and on_exit, where they run
        before it. An exception from one is logged once and counted, never raised.
        """
        if name not in HOOK_ARITY:
            raise ValueError(f"unknown gunicorn hook {name!r}")
        self._added[name].append(fn)

    @property
    def role(self) -> str | None:
        """"master" or "worker" once the hooks run in this process, else None."""
        if self._in_worker:
            return "worker"
        return "master" if self._state is not None else None

    # -- master ---------------------------------------------------------------------

    def nworkers_changed(self, arbiter: Any, new_value: int, old_value: int | None) -> None:
        # The first call comes from inside Arbiter.__init__, before a --preload app is
        # imported: the earliest point to set the multiprocess directory.
        if self._state is None:
            self._start_master(arbiter)
        try:
            assert self._state is not None
            self._state.workers_desired(new_value)
        except Exception:
            self._fault("hook", arbiter.log, "nworkers_changed")
        self._run_added("nworkers_changed", arbiter, new_value, old_value)

    def on_starting(self, arbiter: Any) -> None:
        if self._state is None:  # nworkers_changed was replaced by a project's config
            self._start_master(arbiter)
        self._run_added("on_starting", arbiter)

    def when_ready(self, arbiter: Any) -> None:
        try:
            self._start_endpoint(arbiter)
        except Exception:
            self._fault("hook", arbiter.log, "when_ready")
        self._run_added("when_ready", arbiter)

    def pre_fork(self, arbiter: Any, worker: Any) -> None:
        try:
            if self._state is not None:
                self._state.worker_spawning(worker.age)
        except Exception:
            self._fault("hook", arbiter.log, "pre_fork")
        self._run_added("pre_fork", arbiter, worker)

    def child_exit(self, arbiter: Any, worker: Any) -> None:
        try:
            if self._state is None or self._directory is None:
                return
            self._state.worker_exited(worker)
            self._fold_worker_files(worker.pid)
        except Exception:
            self._fault("hook", arbiter.log, "child_exit")
        self._run_added("child_exit", arbiter, worker)

    def on_reload(self, arbiter: Any) -> None:
        try:
            if self._state is not None:
                self._state.reloaded()
        except Exception:
            self._fault("hook", arbiter.log, "on_reload")
        self._run_added("on_reload", arbiter)

    def pre_exec(self, arbiter: Any) -> None:
        # Runs in the forked child that is about to exec the new master (USR2). Its
        # environment is built from cfg.env_orig, so that is where the private
        # directory is handed over.
        try:
            if self._directory is not None and self._directory.private:
                arbiter.cfg.env_orig[PRIVATE_DIR_ENV] = self._directory.path
        except Exception:
            self._fault("hook", arbiter.log, "pre_exec")
        self._run_added("pre_exec", arbiter)

    def on_exit(self, arbiter: Any) -> None:
        self._run_added("on_exit", arbiter)
        try:
            if self._pusher is not None:  # its final push reads the files: before they go
                self._pusher.stop()
                self._pusher = None
            if self._endpoint is not None:
                self._endpoint.stop()
                self._endpoint = None
            self._release_directory(arbiter, os.getpid())
        except Exception:
            self._fault("hook", arbiter.log, "on_exit")

    def _release_directory(self, arbiter: Any, master_pid: int) -> None:
        """Remove a private directory once no master generation needs it any more.

        Runs from on_exit and, for a master that dies before it (a project's when_ready
        raising, a crash of the main loop), from atexit.
        """
        directory = self._directory
        if directory is None or os.getpid() != master_pid:
            return  # a forked worker runs the master's atexit handlers too
        # A USR2 child (reexec_pid) or parent (master_pid) still uses the directory.
        if getattr(arbiter, "reexec_pid", 0) or getattr(arbiter, "master_pid", 0):
            return
        remove_directory(directory)
        self._directory = None

    # -- worker ---------------------------------------------------------------------

    def post_fork(self, arbiter: Any, worker: Any) -> None:
        try:
            self._become_worker(worker)
        except OSError as exc:
            self._retry_at = time.monotonic() + 1.0
            self._request_fault(worker.log, "post_fork", exc)
        except Exception:
            self._fault("hook", worker.log, "post_fork")
        self._run_added("post_fork", arbiter, worker)

    def post_worker_init(self, worker: Any) -> None:
        # The app is loaded now. If it imported prometheus_client it did so in
        # multiprocess mode (the directory was exported by the master); say so if not.
        try:
            ensure_multiprocess_mode()
        except Exception as exc:
            self._log_once(worker.log, "post_worker_init", str(exc))
        self._run_added("post_worker_init", worker)

    def worker_int(self, worker: Any) -> None:
        # SIGINT/SIGQUIT: a quick but clean exit; worker_exit will note it as graceful.
        pass
        self._run_added("worker_int", worker)

    def worker_abort(self, worker: Any) -> None:
        # The master has already flagged this worker as timed out (worker.aborted), and
        # gunicorn runs post_request for the stuck request next: nothing to add here.
        pass
        self._run_added("worker_abort", worker)

    def pre_request(self, worker: Any, req: Any) -> None:
        recorder = getattr(self._local, "recorder", None) or self._thread_recorder(worker)
        if recorder is not None:
            try:
                recorder.request_started(req.method)
            except Exception as exc:
                self._request_fault(worker.log, "pre_request", exc)
        if self._added_pre_request:  # a check, not a call: this runs for every request
            self._run_added("pre_request", worker, req)

    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        recorder: RequestRecorder | None = getattr(self._local, "recorder", None)
        if recorder is not None:
            try:
                recorder.request_finished(environ, resp)
            except Exception as exc:
                self._request_fault(worker.log, "post_request", exc)
            faults = self._faults
            if faults is not None and faults.pending:  # counted while the disk was full
                with contextlib.suppress(OSError):
                    faults.flush()
        if self._added_post_request:
            self._run_added("post_request", worker, req, environ, resp)

    def worker_exit(self, arbiter: Any, worker: Any) -> None:
        self._run_added("worker_exit", arbiter, worker)
        try:
            if self._state is not None:
                self._state.notes.leave(worker.age, exit_reason_in_worker(worker))
        except Exception:
            self._fault("hook", worker.log, "worker_exit")

    # -- internals --------------------------------------------------------------------

    def _run_added(self, name: str, *args: Any) -> None:
        for fn in self._added[name]:
            try:
                fn(*args)
            except Exception:
                self._fault("hook", args[0].log, f"{name} (added {fn!r})")

    def _start_master(self, arbiter: Any) -> None:
        resolved = load_settings(
            framework=self._framework(arbiter) if callable(self._framework) else self._framework,
            command_line=self._command_line,
            framework_source=self._framework_source,
            gunicorn_addresses=arbiter.cfg.address,
        )
        settings = resolved.settings
        ensure_multiprocess_mode()
        reexec = "GUNICORN_PID" in os.environ
        try:
            directory = prepare_directory(settings, reexec=reexec, environ=os.environ)
        except OSError as exc:
            raise ConfigError(
                [
                    Problem(
                        key="PROMETHEUS_MULTIPROC_DIR",
                        source=resolved.sources.get("multiproc_dir", "default"),
                        expected="a directory gunicorn-prom-ext can create and write",
                        got=str(exc),
                    )
                ]
            ) from exc
        self.settings = settings
        self._directory = directory
        atexit.register(self._release_directory, arbiter, os.getpid())
        self._state = ServerState(start_time=time.time())
        self._faults = _fault_counters(directory.path, settings.namespace)
        self._archive = Archive(directory.path, os.getpid())
        self._fold_lock = DirectoryLock(directory.path)
        fold_leftovers(directory.path, self._archive, self._fold_lock)
        self._last_sweep = time.monotonic()
        if settings.redis_enabled:  # a rejected password stops gunicorn here, before it binds
            from gunicorn_prom_ext.storage.redis import check_credentials

            check_credentials(settings, resolved.sources)
        arbiter.log.info(
            "gunicorn-prom-ext: metrics directory %s (%s)",
            directory.path,
            "private" if directory.private else "shared",
        )
        if not self._gunicorn_settings_applied:
            _warn_unapplied_gunicorn_settings(arbiter.log, resolved.sources, settings)

    def _start_endpoint(self, arbiter: Any) -> None:
        if self.settings is None or self._directory is None or self._state is None:
            return
        # prometheus_client may be imported now that the directory is exported.
        from prometheus_client.registry import CollectorRegistry

        from gunicorn_prom_ext.collector import ServerCollector
        from gunicorn_prom_ext.endpoint import MetricsEndpoint
        from gunicorn_prom_ext.storage.reader import FilesCollector

        log = arbiter.log

        def bad_file(path: str, problem: str) -> None:
            self._count_fault("storage")
            log.error(
                "gunicorn-prom-ext: skipped unreadable metrics file %s (%s); moved "
                "aside as %s.corrupt",
                path,
                problem,
                os.path.basename(path),
            )

        registry = CollectorRegistry(auto_describe=False)
        registry.register(FilesCollector(self._directory.path, bad_file))
        registry.register(ServerCollector(arbiter, self._state, self.settings.namespace))
        self._endpoint = MetricsEndpoint(
            self.settings,
            registry,
            arbiter.log,
            on_fault=lambda kind: self._count_fault(kind),
        )
        self._endpoint.start()
        if self.settings.redis_enabled:
            from gunicorn_prom_ext.storage.redis import RedisPusher

            self._pusher = RedisPusher.for_master(
                self.settings, registry, log, start_time=self._state.start_time,
                on_fault=lambda kind: self._count_fault(kind),
            )  # fmt: skip
            self._pusher.start()

    def _become_worker(self, worker: Any) -> None:
        if self._endpoint is not None:
            self._endpoint.close_inherited_socket()
            self._endpoint = None
        if self.settings is None or self._directory is None:
            return
        self._faults = _fault_counters(self._directory.path, self.settings.namespace)
        # Made now, while there may be room: a full disk later can still be counted in it.
        with contextlib.suppress(OSError):
            self._faults.flush()
        self._in_worker = True
        self._local.recorder = self._new_recorder(worker.log)

    def _new_recorder(self, log: Log) -> RequestRecorder:
        from gunicorn_prom_ext.requests import MetricNames, RequestRecorder

        assert self.settings is not None and self._directory is not None
        settings, path = self.settings, self._directory.path
        ident = f"{os.getpid()}-{next(self._thread_numbers)}"
        return RequestRecorder(
            histograms=MetricFile(metric_file_path(path, "histogram", ident)),
            gauges=MetricFile(metric_file_path(path, "gauge_livesum", ident)),
            names=MetricNames(settings.namespace),
            duration_buckets=settings.duration_buckets,
            body_size_buckets=settings.body_size_buckets,
            log=log,
        )

    def _thread_recorder(self, worker: Any) -> RequestRecorder | None:
        """The recorder of a thread's first request, or again after a full disk (1/s)."""
        if not self._in_worker or time.monotonic() < self._retry_at:
            return None
        try:
            recorder = self._local.recorder = self._new_recorder(worker.log)
        except OSError as exc:
            self._retry_at = time.monotonic() + 1.0
            self._request_fault(worker.log, "post_fork", exc)
            return None
        return recorder

    def _request_fault(self, log: Log, where: str, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            self._count_fault("storage_full")
            if ("storage_full", where) not in self._logged:
                self._logged.add(("storage_full", where))
                log.error(
                    "gunicorn-prom-ext: the metrics directory is full (%s): requests are served "
                    'but not all recorded; the loss is counted in %s{kind="storage_full"} '
                    "and recording resumes when space returns",
                    exc,
                    FAULTS_METRIC + "_total",
                )
        else:
            self._fault("request", log, where)

    def _fold_worker_files(self, pid: int) -> None:
        # Its counts move into the archive; its live gauges (in-flight requests) go.
        assert self._directory is not None and self._archive is not None
        assert self._fold_lock is not None
        path = self._directory.path
        fold_process(path, pid, self._archive, self._fold_lock)
        # Now and then, whatever child_exit never saw (an old USR2 generation's files).
        now = time.monotonic()
        if now - self._last_sweep > LEFTOVER_SWEEP_SECONDS:
            self._last_sweep = now
            fold_leftovers(path, self._archive, self._fold_lock)

    def _fault(self, kind: str, log: Log, where: str) -> None:
        """Contain an exception from one of our hooks: count it, log it once."""
        self._count_fault(kind)
        if (kind, where) not in self._logged:
            self._logged.add((kind, where))
            log.exception(
                "gunicorn-prom-ext: %s hook failed (further failures counted in %s)",
                where,
                FAULTS_METRIC + "_total",
            )

    def _count_fault(self, kind: str) -> None:
        try:
            if self._faults is not None:
                self._faults.inc(kind)
        except Exception:
            pass  # counting must never become a second fault (e.g. a full disk)

    def _log_once(self, log: Log, where: str, message: str) -> None:
        if ("log", where) not in self._logged:
            self._logged.add(("log", where))
            log.error("gunicorn-prom-ext: %s", message)


def _fault_counters(directory: str, namespace: str) -> Counters:
    name = f"{namespace}_{FAULTS_METRIC}" if namespace else FAULTS_METRIC
    path = metric_file_path(directory, "counter", str(os.getpid()))
    return Counters(path, name, FAULTS_HELP, ["kind"])


def _warn_unapplied_gunicorn_settings(
    log: Log, sources: Mapping[str, str], settings: Settings
) -> None:
    # The seed layout's `gunicorn:` section is accepted, but under plain gunicorn only
    # gunicorn's own command line and config file decide its settings.
    flags = {
        "gunicorn_workers": "--workers",
        "gunicorn_timeout": "--timeout",
        "gunicorn_keepalive": "--keep-alive",
    }
    for field_name, flag in flags.items():
        value = getattr(settings, field_name)
        if value is not None:
            log.warning(
                "gunicorn-prom-ext: %s=%s (%s) is not applied by plain gunicorn; pass %s %s",
                field_name,
                value,
                sources.get(field_name, "?"),
                flag,
                value,
            )


def install_hooks(
    namespace: MutableMapping[str, Any], hooks: PrometheusHooks | None = None
) -> PrometheusHooks:
    """Put every hook into a gunicorn config namespace, chained with any already there.

    In a gunicorn.conf.py, call ``install_hooks(globals())`` after defining your own hooks.
    """
    if hooks is None:
        from gunicorn_prom_ext import gunicorn_conf

        hooks = gunicorn_conf.hooks
    for name in HOOK_ARITY:
        ours = getattr(hooks, name)
        theirs = namespace.get(name)
        namespace[name] = chain(name, ours, theirs) if callable(theirs) else ours
    return hooks
