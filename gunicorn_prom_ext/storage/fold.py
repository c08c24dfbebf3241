"""Fold dead processes' metric files into per-type archives, so scrapes stay cheap.

prometheus_client leaves every dead worker's counter and histogram files behind, and a
scrape reads them all: its cost grows with every worker that ever lived (about 0.09 ms
per dead worker of ~50 series; see docs/design-notes.md). Here, when a worker dies, its
samples are added into one archive file per type and mode, and its files are removed. A
fold and a scrape never interleave: both take the directory's lock (a scrape shared, a
fold exclusive), or a scrape could see a value twice or not at all, which Prometheus
would read as a counter reset.

Gauges: ``live*`` files of a dead process are dropped (as mark_process_dead does);
``all`` gauges keep a series per pid by design, so their files stay; ``sum``, ``min``,
``max`` and ``mostrecent`` are folded with their own rule (timestamps kept).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator

from gunicorn_prom_ext.forks import act_around_forks
from gunicorn_prom_ext.natives import natives
from gunicorn_prom_ext.storage.files import MetricFile, read_entries, read_file
from gunicorn_prom_ext.storage.names import (
    ARCHIVE_TAG,
    KINDS,
    FileName,
    metric_files,
    parse_file_name,
)

LOCK_NAME = ".gunicorn-prom-ext.lock"


def files_of(directory: str, pid: int) -> list[FileName]:
    """Every file a process wrote: prometheus_client's, then ours, thread by thread.

    Names are built and checked rather than globbed, which would cost as much as the
    directory is large. Thread files are numbered from 0; one lost to a full disk leaves
    a gap, and the files past it go to the leftover sweep.
    """
    idents = [str(pid), f"gpe-{pid}"]
    thread = 0
    while any(
        os.path.exists(os.path.join(directory, f"{kind}_gpe-{pid}-{thread}.db"))
        for kind in ("histogram", "gauge_livesum")
    ):
        idents.append(f"gpe-{pid}-{thread}")
        thread += 1
    found = []
    for kind in KINDS:
        for ident in idents:
            path = os.path.join(directory, f"{kind}_{ident}.db")
            if os.path.exists(path):
                name = parse_file_name(path)
                if name is not None:
                    found.append(name)
    return found


class DirectoryLock:
    """Shared for scrapes, exclusive for folds: within this process and across processes.

    Across processes (two master generations during a USR2 re-exec) it is a ``flock`` on a
    file in the directory, taken on a descriptor opened for each acquisition (flock locks
    belong to an open file: two scrapes sharing one descriptor would share one lock, and
    the first to finish would release it under the other). Within the master, scrapes
    from several threads could keep the shared lock held without a gap, and a fold (in
    gunicorn's main loop, which must not stall) would wait forever: so a fold that is
    waiting holds new scrapes back until it is done. Share one instance per process.

    A worker forked while a scrape holds the lock would keep that descriptor, and with it
    the lock, for its whole life: the child closes its copies right after the fork.
    """

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, LOCK_NAME)
        # Real threads even in a master eventlet patched: scrapes run in those (natives.py).
        self._turn = natives().threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._held: set[int] = set()  # descriptors holding a flock right now
        # Taken around opening and closing one, and by fork: a fork never falls between.
        # Reentrant: a signal handler (gunicorn 22-23's SIGCHLD) may run in the holder.
        self._descriptors = natives().threading.RLock()
        act_around_forks(self)

    def before_fork(self) -> None:
        self._descriptors.acquire()

    def after_fork_in_parent(self) -> None:
        self._descriptors.release()

    def after_fork_in_child(self) -> None:
        for fd in list(self._held):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held.clear()
        real = natives().threading
        self._descriptors = real.RLock()
        self._turn = real.Condition()
        self._readers = self._writers_waiting = 0
        self._writing = False

    def inode(self, *, create: bool = True) -> int:
        """The lock file's inode (made if missing, unless ``create`` is False)."""
        if create:
            os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644))
        return os.stat(self._path).st_ino

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._turn:
            while self._writing or self._writers_waiting:
                self._turn.wait()
            self._readers += 1
        try:
            with self._flocked(fcntl.LOCK_SH):
                yield
        finally:
            with self._turn:
                self._readers -= 1
                self._turn.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._turn:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._turn.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            with self._flocked(fcntl.LOCK_EX):
                yield
        finally:
            with self._turn:
                self._writing = False
                self._turn.notify_all()

    @contextlib.contextmanager
    def _flocked(self, operation: int) -> Iterator[None]:
        with self._descriptors:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            self._held.add(fd)
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            with self._descriptors:
                self._held.discard(fd)
                os.close(fd)  # releases the lock


class _ArchiveFile:
    def __init__(self, path: str) -> None:
        self.file = MetricFile(path)
        # Every value, kept in memory too: a file that goes away is written anew from here.
        self._current: dict[str, tuple[float, float]] = dict(self.file.stored_items())

    def rewrite(self) -> None:
        """Write every value into a new file at the same path (the old one went away)."""
        self.file.close()
        self.file = MetricFile(self.file.path, fresh=True)
        self.file.make_room(self._current)
        for key, (value, timestamp) in self._current.items():
            self.file.write_with_timestamp(self.file.position(key), value, timestamp)

    def merge(self, key: str, value: float, timestamp: float, mode: str) -> None:
        pos = self.file.position(key)
        old = self._current.get(key)
        if old is None:
            new = (value, timestamp)
        elif mode in ("min", "max"):
            pick = min if mode == "min" else max
            new = (pick(old[0], value), max(old[1], timestamp))
        elif mode == "mostrecent":
            new = (value, timestamp) if timestamp > old[1] else old
        else:  # counters, histograms, summaries, sum gauges
            new = (old[0] + value, max(old[1], timestamp))
        self._current[key] = new
        self.file.write_with_timestamp(pos, *new)


# Called with (path, problem) for a file that cannot be read; it has been renamed
# <path>.corrupt, where nothing reads it any more.
BadFile = Callable[[str, str], None]


def set_aside(path: str, problem: str, on_bad_file: BadFile | None) -> None:
    # Not movable (someone else's file in a sticky directory): left where it is, unread.
    with contextlib.suppress(OSError):
        os.replace(path, path + ".corrupt")
        if on_bad_file is not None:
            on_bad_file(path, problem)


class Archive:
    """One master's archive files, one per (type, gauge mode). Only its master writes them."""

    def __init__(
        self, directory: str, owner_pid: int, on_bad_file: BadFile | None = None
    ) -> None:
        self._directory = directory
        self._owner = owner_pid
        self._on_bad_file = on_bad_file
        self._files: dict[tuple[str, str], _ArchiveFile] = {}

    def _file(self, type_: str, mode: str) -> _ArchiveFile:
        archive = self._files.get((type_, mode))
        if archive is None:
            kind = f"{type_}_{mode}" if mode else type_
            path = os.path.join(self._directory, f"{kind}_{ARCHIVE_TAG}{self._owner}.db")
            try:
                archive = _ArchiveFile(path)
            except ValueError as exc:  # someone else's garbage under our name
                set_aside(path, str(exc), self._on_bad_file)
                archive = _ArchiveFile(path)
            self._files[(type_, mode)] = archive
        return archive

    def rewrite(self) -> None:
        """The directory went away and came back: write every archive anew."""
        for archive in self._files.values():
            archive.rewrite()

    def rewrite_gone(self) -> None:
        """Write anew, from memory, the archives that are no longer in place (one was set
        aside as unreadable: left as it was, folds would go on into the set-aside file)."""
        for archive in self._files.values():
            if not archive.file.in_place():
                archive.rewrite()

    def fold(self, name: FileName) -> bool:
        """Add one dead process's file into the archive and remove it; False if kept."""
        if name.type == "gauge" and name.mode.startswith("live"):
            os.remove(name.path)
            return True
        if name.type == "gauge" and name.mode not in ("sum", "min", "max", "mostrecent"):
            return False  # "all" keeps one series per pid: nothing to fold into
        try:
            # read_file: a FIFO under a dead worker's name would block gunicorn's main loop.
            data = read_file(name.path)
            entries = list(read_entries(data)) if data else []
        except FileNotFoundError:
            raise
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            set_aside(name.path, str(exc), self._on_bad_file)
            return False
        archive = self._file(name.type, name.mode)
        # All or nothing: a full disk must not leave half a worker in the archive and the
        # whole of it still in its file, to be counted twice at the next try.
        archive.file.make_room(entry.key for entry in entries)
        for entry in entries:
            archive.merge(entry.key, entry.value, entry.timestamp, name.mode)
        os.remove(name.path)
        return True


def fold_process(directory: str, pid: int, archive: Archive, lock: DirectoryLock) -> int:
    """Fold every file of a dead process; returns how many files were folded."""
    folded = 0
    with lock.exclusive():
        for name in files_of(directory, pid):
            with contextlib.suppress(FileNotFoundError):
                folded += archive.fold(name)
    return folded


def fold_leftovers(directory: str, archive: Archive, lock: DirectoryLock) -> int:
    """Fold files of processes that are gone, whoever they belonged to.

    Covers what child_exit never saw: a crashed master's workers, a previous run in a
    reused directory, an old generation's archives after USR2. Files of live processes
    and of this master are left alone, and so is anything that is not a metric file.
    """
    folded = 0
    with lock.exclusive():
        for name in metric_files(directory)[0]:
            if name.pid == os.getpid() or _alive(name.pid):
                continue
            with contextlib.suppress(FileNotFoundError):
                folded += archive.fold(name)
    return folded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
