"""The fifteen gunicorn server hooks, and how to chain them with a project's own.

One PrometheusHooks instance serves one gunicorn process tree. Its master side
(master.py: the directory, the server's state, the endpoint) is set up by the first
master hook; its worker side (worker.py: a recorder per thread, or a middleware) by
post_fork in each worker. This module only routes gunicorn's calls to them.

None of these hooks lets an exception reach gunicorn, where a master-side one would
stop the whole server. The one deliberate exception is a ConfigError at start-up:
gunicorn prints it as one "Error: ..." line and exits 1 before serving.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from gunicorn_prom_ext.chaining import HOOK_ARITY, Hook, chain
from gunicorn_prom_ext.faults import Faults
from gunicorn_prom_ext.master import MasterSide, warn_unapplied_gunicorn_settings
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.sources import load_settings
from gunicorn_prom_ext.storage.directory import ensure_multiprocess_mode
from gunicorn_prom_ext.worker import WorkerSide, ignore

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
        self._settings: Settings | None = None
        self._master: MasterSide | None = None
        self._worker: WorkerSide | None = None
        # Until a side exists (or when it cannot be made), faults are still contained.
        self._faults = Faults()
        self._added: dict[str, list[Hook]] = {name: [] for name in HOOK_ARITY}
        self._added_pre_request = self._added["pre_request"]
        self._added_post_request = self._added["post_request"]
        # The worker side's request hooks once this process is a worker (worker.py).
        self._pre_request: Callable[..., None] = ignore
        self._post_request: Callable[..., None] = ignore

    @property
    def settings(self) -> Settings | None:
        """The settings this server runs with, once the master read them (also in workers)."""
        return self._settings

    @property
    def role(self) -> str | None:
        """"master" or "worker" once the hooks run in this process, else None."""
        if self._worker is not None:
            return "worker"
        return "master" if self._master is not None else None

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

    # -- master ---------------------------------------------------------------------

    def nworkers_changed(self, arbiter: Any, new_value: int, old_value: int | None) -> None:
        # The first call comes from inside Arbiter.__init__, before a --preload app is
        # imported: the earliest point to set the multiprocess directory.
        if self._master is None:
            self._start_master(arbiter)
        try:
            if self._master is not None:
                self._master.state.workers_desired(new_value)
        except Exception:
            self._faults.hook_failed("hook", arbiter.log, "nworkers_changed")
        self._run_added("nworkers_changed", arbiter, new_value, old_value)

    def on_starting(self, arbiter: Any) -> None:
        if self._master is None:  # nworkers_changed was replaced by a project's config
            self._start_master(arbiter)
        self._run_added("on_starting", arbiter)

    def when_ready(self, arbiter: Any) -> None:
        try:
            if self._master is not None:
                self._master.start_endpoint(arbiter)
        except Exception:
            self._faults.hook_failed("hook", arbiter.log, "when_ready")
        self._run_added("when_ready", arbiter)

    def pre_fork(self, arbiter: Any, worker: Any) -> None:
        try:
            if self._master is not None:
                self._master.worker_spawning(worker)
        except Exception:
            self._faults.hook_failed("hook", arbiter.log, "pre_fork")
        self._run_added("pre_fork", arbiter, worker)

    def child_exit(self, arbiter: Any, worker: Any) -> None:
        try:
            if self._master is not None:
                self._master.child_exit(worker)
        except Exception:
            self._faults.hook_failed("hook", arbiter.log, "child_exit")
        self._run_added("child_exit", arbiter, worker)

    def on_reload(self, arbiter: Any) -> None:
        try:
            if self._master is not None:
                self._master.state.reloaded()
        except Exception:
            self._faults.hook_failed("hook", arbiter.log, "on_reload")
        self._run_added("on_reload", arbiter)

    def pre_exec(self, arbiter: Any) -> None:
        try:
            if self._master is not None:
                self._master.pre_exec(arbiter)
        except Exception:
            self._faults.hook_failed("hook", arbiter.log, "pre_exec")
        self._run_added("pre_exec", arbiter)

    def on_exit(self, arbiter: Any) -> None:
        self._run_added("on_exit", arbiter)
        try:
            if self._master is not None:
                self._master.on_exit(arbiter)
        except Exception:
            self._faults.hook_failed("hook", arbiter.log, "on_exit")

    # -- worker ---------------------------------------------------------------------

    def post_fork(self, arbiter: Any, worker: Any) -> None:
        try:
            if self._master is not None:
                self._worker = self._master.for_worker(worker)
                self._master = None
                if self._worker is not None:
                    self._faults = self._worker.faults
                    self._pre_request = self._worker.pre_request
                    self._post_request = self._worker.post_request
                    self._worker.post_fork(worker)
        except Exception:
            self._faults.hook_failed("hook", worker.log, "post_fork")
        self._run_added("post_fork", arbiter, worker)

    def post_worker_init(self, worker: Any) -> None:
        # The app is loaded now. If it imported prometheus_client it did so in
        # multiprocess mode (the directory was exported by the master); say so if not.
        try:
            ensure_multiprocess_mode()
        except Exception as exc:
            self._faults.error("hook", worker.log, "post_worker_init", "%s", exc)
        try:
            if self._worker is not None:
                self._worker.post_worker_init(worker)
        except Exception:
            self._faults.hook_failed("hook", worker.log, "post_worker_init")
        self._run_added("post_worker_init", worker)

    def worker_int(self, worker: Any) -> None:
        # SIGINT/SIGQUIT: a quick but clean exit; worker_exit will note it as graceful.
        self._run_added("worker_int", worker)

    def worker_abort(self, worker: Any) -> None:
        # The master has already flagged this worker as timed out (worker.aborted), and
        # gunicorn runs post_request for the stuck request next: nothing to add here.
        self._run_added("worker_abort", worker)

    def pre_request(self, worker: Any, req: Any) -> None:
        self._pre_request(worker, req)
        if self._added_pre_request:  # a check, not a call: this runs for every request
            self._run_added("pre_request", worker, req)

    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        self._post_request(worker, req, environ, resp)
        if self._added_post_request:
            self._run_added("post_request", worker, req, environ, resp)

    def worker_exit(self, arbiter: Any, worker: Any) -> None:
        self._run_added("worker_exit", arbiter, worker)
        try:
            if self._worker is not None:
                self._worker.worker_exit(worker)
            elif self._master is not None and os.getpid() == getattr(worker, "ppid", None):
                # In the master, gunicorn calls worker_exit (not child_exit) for a worker
                # it drops from its table because a signal to it found no process:
                # still an exit, or spawns and exits would stay one apart for good.
                self._master.child_exit(worker, reaped_elsewhere=True)
        except Exception:
            self._faults.hook_failed("hook", worker.log, "worker_exit")

    # -- internals --------------------------------------------------------------------

    def _run_added(self, name: str, *args: Any) -> None:
        for fn in self._added[name]:
            try:
                fn(*args)
            except Exception:
                self._faults.hook_failed("hook", args[0].log, f"{name} (added {fn!r})")

    def _start_master(self, arbiter: Any) -> None:
        framework = self._framework(arbiter) if callable(self._framework) else self._framework
        resolved = load_settings(
            framework=framework,
            command_line=self._command_line,
            framework_source=self._framework_source,
            gunicorn_addresses=arbiter.cfg.address,
        )
        self._master = MasterSide(resolved, arbiter)
        self._settings = resolved.settings
        self._faults = self._master.faults
        if not self._gunicorn_settings_applied:
            warn_unapplied_gunicorn_settings(arbiter.log, resolved.sources, resolved.settings)


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
