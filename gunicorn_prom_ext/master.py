"""The master side of the hooks: the directory, the server's state, the endpoint, folds.

Set up by the master's first hook (settings are read there, after gunicorn parsed its
own configuration and before a --preload app is imported). The endpoint and the Redis
pusher run in threads of the master; everything else runs in gunicorn's main loop.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gunicorn_prom_ext.faults import Faults, fault_counters
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.natives import natives
from gunicorn_prom_ext.server import ServerState
from gunicorn_prom_ext.settings import ConfigError, Problem, Settings
from gunicorn_prom_ext.sources import ResolvedSettings
from gunicorn_prom_ext.storage.directory import (
    PRIVATE_DIR_ENV,
    MultiprocDirectory,
    StorageEpoch,
    ensure_multiprocess_mode,
    prepare_directory,
    recreate_directory,
    remove_directory,
)
from gunicorn_prom_ext.storage.fold import Archive, DirectoryLock, fold_leftovers, fold_process
from gunicorn_prom_ext.worker import WorkerSide
from gunicorn_prom_ext.worker_classes import Recording, recording_for

if TYPE_CHECKING:
    from gunicorn_prom_ext.endpoint import MetricsEndpoint
    from gunicorn_prom_ext.storage.redis_push import RedisPusher

# Files child_exit never saw (an old USR2 generation's, say) are folded at most this often.
LEFTOVER_SWEEP_SECONDS = 30.0


class MasterSide:
    """Everything the hooks keep in the master process (and hand to forked workers)."""

    def __init__(self, resolved: ResolvedSettings, arbiter: Any) -> None:
        settings = resolved.settings
        ensure_multiprocess_mode()
        log: Log = arbiter.log
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
        self.settings: Settings = settings
        self.directory: MultiprocDirectory | None = directory
        self._fold_lock = DirectoryLock(directory.path)
        self._sentinel = self._fold_lock.inode()
        self._log = log
        atexit.register(self.release_directory, arbiter, os.getpid())
        self.state = ServerState(start_time=time.time())
        self.epoch = StorageEpoch()
        self.faults = Faults(fault_counters(directory.path, settings.namespace))
        self.faults.publish_kinds()
        self._archive = Archive(directory.path, os.getpid(), self.bad_file)
        # Scrapes (threads) and child_exit (main loop, or a signal handler in it: RLock).
        # Real locks even in a master eventlet patched (natives.py): a green one, shared
        # with the endpoint's real threads, breaks eventlet's hub when they contend.
        self._storage_lock = natives().threading.RLock()
        self._dead: list[int] = []  # pids of exited workers still to fold
        self._folding = False
        fold_leftovers(directory.path, self._archive, self._fold_lock)
        self._last_sweep = time.monotonic()
        self.endpoint: MetricsEndpoint | None = None
        self._pusher: RedisPusher | None = None
        self.recording: Recording = recording_for(arbiter.worker_class)
        if settings.redis_enabled:  # a rejected password stops gunicorn here, before it binds
            from gunicorn_prom_ext.storage.redis import check_credentials

            check_credentials(settings, resolved.sources)
        log.info(
            "gunicorn-prom-ext: metrics directory %s (%s)",
            directory.path, "private" if directory.private else "shared",
        )  # fmt: skip
        if directory.shared_with:
            log.warning(
                "gunicorn-prom-ext: %s holds metric files of %d running process(es) that "
                "are not this server's (pids %s): another server uses the directory. Its "
                "files are left alone, and each server's /metrics shows both servers' "
                "requests added up: give each server a directory of its own",
                directory.path, len(directory.shared_with),
                ", ".join(map(str, directory.shared_with[:5])),
            )  # fmt: skip
        if directory.foreign:
            log.warning(
                "gunicorn-prom-ext: %d file(s) in %s are not metric files and are left "
                "alone: %s", len(directory.foreign), directory.path,
                ", ".join(os.path.basename(p) for p in directory.foreign[:5]),
            )  # fmt: skip
        log.info("gunicorn-prom-ext: %s", self.recording.describe(arbiter.cfg.worker_class_str))

    # -- hooks ------------------------------------------------------------------------------

    def start_endpoint(self, arbiter: Any) -> None:
        directory = self.directory
        if directory is None:
            return
        # prometheus_client may be imported now that the directory is exported.
        from prometheus_client.registry import CollectorRegistry

        from gunicorn_prom_ext.collector import ServerCollector
        from gunicorn_prom_ext.endpoint import MetricsEndpoint
        from gunicorn_prom_ext.storage.reader import FilesCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            FilesCollector(directory.path, self.bad_file, self.before_scrape, self._fold_lock)
        )
        registry.register(ServerCollector(arbiter, self.state, self.settings.namespace))
        self.endpoint = MetricsEndpoint(
            self.settings, registry, arbiter.log, on_fault=self.faults.count
        )
        self.endpoint.start()
        if self.settings.redis_enabled:
            from gunicorn_prom_ext.storage.redis_push import RedisPusher

            self._pusher = RedisPusher.for_master(
                self.settings, registry, arbiter.log, start_time=self.state.start_time,
                on_fault=self.faults.count,
            )  # fmt: skip
            self._pusher.start()

    def worker_spawning(self, worker: Any) -> None:
        self.state.worker_spawning(worker.age)

    def child_exit(self, worker: Any, *, reaped_elsewhere: bool = False) -> None:
        """A worker ended. ``reaped_elsewhere``: other code in the master collected it, and
        gunicorn found it gone when it next signalled it (its worker_exit path)."""
        self.state.worker_exited(worker, reaped_elsewhere=reaped_elsewhere)
        self._dead.append(worker.pid)
        # gunicorn 22 and 23 run child_exit inside their SIGCHLD handler, which can
        # interrupt a fold under way in this very thread: that fold takes this pid too,
        # and one that lands just after its last look is taken by the outer loop.
        while self._dead and not self._folding:
            self._folding = True
            try:
                while self._dead:
                    self._fold(self._dead.pop(0))
            finally:
                self._folding = False

    def _fold(self, pid: int) -> None:
        directory = self.directory
        if directory is None:
            return
        self.check_storage()
        if not os.path.isdir(directory.path):
            return  # gone, and not made again (said once): the worker's files went with it
        # Its counts move into the archive; its live gauges (in-flight requests) go.
        fold_process(directory.path, pid, self._archive, self._fold_lock)
        self._sweep_leftovers_if_due()

    def before_scrape(self) -> None:
        self.check_storage()
        # Also from here: a server whose workers never exit would otherwise never fold
        # the files of processes it did not fork (the app's own short-lived processes
        # using prometheus_client), and every scrape would read them all.
        self._sweep_leftovers_if_due()

    def _sweep_leftovers_if_due(self) -> None:
        """Now and then, whatever child_exit never saw (an old USR2 generation's files)."""
        directory = self.directory
        with self._storage_lock:
            now = time.monotonic()
            if directory is None or now - self._last_sweep <= LEFTOVER_SWEEP_SECONDS:
                return
            self._last_sweep = now
        if os.path.isdir(directory.path):
            fold_leftovers(directory.path, self._archive, self._fold_lock)

    def pre_exec(self, arbiter: Any) -> None:
        # Runs in the forked child that is about to exec the new master (USR2). Its
        # environment is built from cfg.env_orig, so that is where the private
        # directory is handed over.
        if self.directory is not None and self.directory.private:
            arbiter.cfg.env_orig[PRIVATE_DIR_ENV] = self.directory.path

    def on_exit(self, arbiter: Any) -> None:
        if self._pusher is not None:  # its final push reads the files: before they go
            self._pusher.stop()
            self._pusher = None
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        self.release_directory(arbiter, os.getpid())

    def release_directory(self, arbiter: Any, master_pid: int) -> None:
        """Remove a private directory once no master generation needs it any more.

        Runs from on_exit and, for a master that dies before it (a project's when_ready
        raising, a crash of the main loop), from atexit.
        """
        directory = self.directory
        if directory is None or os.getpid() != master_pid:
            return  # a forked worker runs the master's atexit handlers too
        # A USR2 child (reexec_pid) or parent (master_pid) still uses the directory.
        if getattr(arbiter, "reexec_pid", 0) or getattr(arbiter, "master_pid", 0):
            return
        remove_directory(directory)
        self.directory = None

    def for_worker(self, worker: Any) -> WorkerSide | None:
        """In a freshly forked worker: drop the master's parts, make the worker's."""
        if self.endpoint is not None:
            self.endpoint.close_inherited_socket()
            self.endpoint = None
        self._pusher = None
        if self.directory is None:
            return None
        return WorkerSide(
            self.settings, self.directory.path, self.epoch, self.state.notes,
            self.recording, worker.log,
        )  # fmt: skip

    # -- storage faults ---------------------------------------------------------------------

    def bad_file(self, path: str, problem: str) -> None:
        """A metric file was set aside: if it was a live worker's, the worker writes anew;
        if it was one of this master's (an archive, its fault counts), it is written anew
        here and now, from memory."""
        self.epoch.bump()
        with self._storage_lock:
            try:
                self._archive.rewrite_gone()
                if self.faults.counters is not None:
                    self.faults.counters.relocate()
            except OSError as exc:  # a full disk: the next fold or check tries again
                self._log.debug("gunicorn-prom-ext: rewriting %s failed: %s", path, exc)
        self.faults.count("storage")
        self._log.error(
            "gunicorn-prom-ext: skipped unreadable metrics file %s (%s); moved aside as "
            "%s.corrupt", path, problem, os.path.basename(path),
        )  # fmt: skip

    def check_storage(self) -> None:
        """Before each scrape and fold: is the directory still ours? If someone removed or
        replaced it, make it again and have every writer rewrite its values from memory."""
        directory = self.directory
        if directory is None:
            return
        with self._storage_lock:
            # The lock file stands for the directory: a directory removed and made again
            # by hand (maybe with the same inode) lacks it.
            try:
                if self._fold_lock.inode(create=False) == self._sentinel:
                    return
            except OSError:  # gone, or its directory replaced by a file (ENOTDIR)
                pass
            try:
                recreate_directory(directory)
                self._sentinel = self._fold_lock.inode()
                self._archive.rewrite()
                if self.faults.counters is not None:
                    self.faults.counters.relocate()
            except OSError as exc:
                self.faults.error(
                    "storage_lost", self._log, "recreate",
                    "the metrics directory %s went away and cannot be made again (%s); "
                    "metrics are not recorded until it can", directory.path, exc,
                )  # fmt: skip
                return
            self.epoch.bump()
            self.faults.error(
                "storage_lost", self._log, "lost",
                "the metrics directory %s was removed or replaced while serving; made it "
                "again: live workers rewrite their counts from memory, but the files of "
                "workers that exited meanwhile and the app's own prometheus_client metrics "
                "recorded so far are lost", directory.path,
            )  # fmt: skip


def warn_unapplied_gunicorn_settings(
    log: Log, sources: Mapping[str, str], settings: Settings
) -> None:
    """The seed layout's ``gunicorn:`` section is accepted, but under plain gunicorn only
    gunicorn's own command line and config file decide its settings."""
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
                field_name, value, sources.get(field_name, "?"), flag, value,
            )  # fmt: skip
