"""The multiprocess directory's life: choose or create it, wipe stale files, remove it.

prometheus_client picks its storage when it is first imported, from
PROMETHEUS_MULTIPROC_DIR, so the directory must be in the environment before anything
in the master or a worker imports it (docs/design-notes.md, "prometheus_client").

A private directory (none configured) is made under the temporary directory, marked with
its master's pid and start time, and removed when the master exits; one left by a master
that died without cleaning up (SIGKILL, OOM) is swept at the next start.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass

import psutil

from gunicorn_prom_ext.settings import ConfigError, Problem, Settings
from gunicorn_prom_ext.storage.names import FileName, metric_files

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Carries a private directory across a USR2 re-exec, so the new master adopts it
# (instead of starting from zero) and knows it must remove it at exit.
PRIVATE_DIR_ENV = "GUNICORN_PROM_EXT_PRIVATE_DIR"
PRIVATE_PREFIX = "gunicorn-prom-ext-"
# In a private directory: "<pid> <process start time>" of the master that owns it.
OWNER_FILE = ".owner"
# A process start time is known to about a second (psutil adds the boot time, whole
# seconds, to the start in clock ticks).
_START_TIME_SLACK = 2.0


@dataclass(frozen=True)
class MultiprocDirectory:
    path: str
    private: bool  # created by this package, removed when its last master exits
    foreign: tuple[str, ...] = ()  # *.db files that are not metric files, left alone
    # Live processes other than this master whose metric files were found at a fresh
    # start: another server uses the directory (their files are left alone).
    shared_with: tuple[int, ...] = ()


def prepare_directory(
    settings: Settings, *, reexec: bool, environ: MutableMapping[str, str]
) -> MultiprocDirectory:
    """Pick the directory, export it for prometheus_client and the workers.

    A fresh start wipes metric files left by an earlier run (their counts would be added
    to this run's); a USR2 re-exec must not, because the old generation is still writing.
    """
    handed_over = environ.pop(PRIVATE_DIR_ENV, None)
    configured = os.path.abspath(settings.multiproc_dir) if settings.multiproc_dir else None
    shared_with: tuple[int, ...] = ()
    # Handed over by the previous master (USR2) or by a framework command that made it
    # before importing the app (launcher.py): ours to remove at exit.
    if (
        handed_over
        and os.path.isdir(handed_over)
        and (reexec or configured in (None, os.path.abspath(handed_over)))
    ):
        mark_owner(handed_over)
        path, private = handed_over, True
    elif configured:
        os.makedirs(configured, exist_ok=True)
        if not reexec:
            shared_with = live_writers(configured)
            if settings.cleanup_db_files:
                wipe_stale_files(configured, keep=shared_with)
        path, private = configured, False
    else:
        path, private = make_private_directory(), True
    environ[MULTIPROC_DIR_ENV] = path
    foreign = tuple(sorted(metric_files(path)[1]))
    return MultiprocDirectory(path, private, foreign, shared_with)


def make_private_directory() -> str:
    """A new private directory, owned by this process; orphans of dead masters go first."""
    sweep_orphans()
    path = tempfile.mkdtemp(prefix=PRIVATE_PREFIX)
    mark_owner(path)
    return path


def mark_owner(path: str) -> None:
    """Record this process as the directory's master (for the orphan sweep)."""
    with contextlib.suppress(OSError), open(
        os.path.join(path, OWNER_FILE), "w", encoding="ascii"
    ) as f:
        pid = os.getpid()
        f.write(f"{pid} {_start_time(pid)} {_since_boot(pid)}\n")


def sweep_orphans(parent: str | None = None) -> list[str]:
    """Remove private directories whose master is gone; returns those removed.

    Only directories of ours (our prefix, our user, an owner file naming a dead process
    or a process that has since been replaced under the same pid) are touched.
    """
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PRIVATE_PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            with open(os.path.join(entry.path, OWNER_FILE), encoding="ascii") as f:
                fields = f.read(64).split()
            if len(fields) not in (2, 3):
                continue
            pid, started = int(fields[0]), float(fields[1])
            since_boot = float(fields[2]) if len(fields) == 3 else None
        except (OSError, ValueError):
            continue  # not marked (yet): never guess
        if since_boot is not None:  # immune to the wall clock being set since
            gone = abs(_since_boot(pid) - since_boot) > 0.05
        else:  # written by an older release: its start time as it was then
            gone = _start_time(pid) != started
        if gone:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _start_time(pid: int) -> float:
    """The process's start time (Unix time), 0.0 if there is no such process.

    It moves with the wall clock: psutil adds the boot time, which the kernel derives
    from the wall clock, so setting the clock (an NTP step, a VM resumed) changes it."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _since_boot(pid: int) -> float:
    """Seconds from boot to the process's start (what the kernel keeps, in clock ticks),
    -1.0 if there is no such process."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return -1.0
    return round(started - psutil.boot_time(), 2)


def live_writers(path: str) -> tuple[int, ...]:
    """Processes other than this one that may still be writing metric files here."""
    pids = {name.pid for name in metric_files(path)[0] if _may_be_writing(name)}
    pids.discard(os.getpid())
    return tuple(sorted(pids))


def _may_be_writing(name: FileName) -> bool:
    """Whether the file's process lives and is old enough to have written the file (its
    pid reused since, after a reboot say, by a process started later: a stale file)."""
    try:
        changed = os.stat(name.path).st_ctime
    except OSError:
        return False
    started = _start_time(name.pid)
    return 0.0 < started <= changed + _START_TIME_SLACK


def wipe_stale_files(path: str, keep: tuple[int, ...] = ()) -> int:
    """Remove the metric files an earlier run left; anything else stays, and so do the
    files of the processes in ``keep`` (another server's, still writing them)."""
    removed = 0
    for name in metric_files(path)[0]:
        if name.pid in keep:
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):  # a directory: not ours
            os.remove(name.path)
            removed += 1
    return removed


def remove_directory(directory: MultiprocDirectory) -> None:
    if directory.private:
        shutil.rmtree(directory.path, ignore_errors=True)


def recreate_directory(directory: MultiprocDirectory) -> None:
    """Make the directory again after someone removed it; refuse a path that is now a
    symlink or someone else's (a private directory sits in a shared temporary dir)."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory.path, mode=0o700 if directory.private else 0o777)
    info = os.lstat(directory.path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PermissionError(f"{directory.path} is no longer a directory of ours")
    if directory.private:
        mark_owner(directory.path)


class StorageEpoch:
    """A counter in shared memory, mapped before the first fork: the master bumps it when
    files went away (the directory was deleted, a file was set aside as bad), and each
    worker thread, seeing it change, writes its values into new files."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous, MAP_SHARED with the workers
        self.view = memoryview(self._map).cast("Q")

    @property
    def value(self) -> int:
        return int(self.view[0])

    def bump(self) -> None:
        self.view[0] += 1


def prometheus_client_single_process() -> bool:
    """Whether prometheus_client is imported and has chosen in-memory values."""
    values = sys.modules.get("prometheus_client.values")
    return values is not None and getattr(values, "ValueClass", None) is values.MutexValue


def ensure_multiprocess_mode() -> None:
    """Refuse to start when prometheus_client already chose single-process storage.

    Its value class is chosen once, at import: a process that imported it before the
    directory was set keeps every app metric in memory, and every worker forked from
    it inherits that, so the endpoint would silently show nothing of them.
    """
    if not prometheus_client_single_process():
        return
    raise ConfigError(
        [
            Problem(
                key=MULTIPROC_DIR_ENV,
                source="environment",
                expected=(
                    "set before prometheus_client is first imported. prometheus_client was "
                    "imported in the gunicorn master (by the gunicorn config file, or by the "
                    "app loaded with --preload) before gunicorn-prom-ext could set "
                    f"{MULTIPROC_DIR_ENV}, so it runs in single-process mode and the workers' "
                    "metrics would never reach the endpoint. Fix: export "
                    f"{MULTIPROC_DIR_ENV}=/path/to/an/empty/dir before starting gunicorn, or "
                    "import prometheus_client only inside the app, without --preload"
                ),
                got="prometheus_client already imported in single-process mode",
            )
        ]
    )
