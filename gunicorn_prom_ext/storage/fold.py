"""Fold dead processes' metric files into per-type archives, so scrapes stay cheap.

prometheus_client leaves every dead worker's counter and histogram files behind, and a
scrape reads them all: its cost grows with every worker that ever lived (FIELD-NOTES
§2). Here, when a worker dies, its samples are added into one archive file per type
and mode, and its files are removed. A fold and a scrape never interleave: both take
the directory's lock (a scrape shared, a fold exclusive), or a scrape could see a value
twice or not at all, which Prometheus would read as a counter reset.

Gauges: ``live*`` files of a dead process are dropped (as mark_process_dead does);
``all`` gauges keep a series per pid by design, so their files stay; ``sum``, ``min``,
``max`` and ``mostrecent`` are folded with their own rule (timestamps kept).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from gunicorn_prom_ext.storage.files import MetricFile, read_entries

LOCK_NAME = ".gunicorn-prom-ext.lock"
_ARCHIVE_TAG = "archive-"
# <type>_<id>.db, gauge_<mode>_<id>.db; <id> is a pid, "gpe-<pid>" (ours) or
# "archive-<master pid>".
_NAME = re.compile(r"^(?P<type>[a-z]+)_(?:(?P<mode>[a-z]+)_)?(?P<id>[^_]+)\.db$")


@dataclass(frozen=True)
class FileName:
    path: str
    type: str
    mode: str  # gauge mode, "" for other types
    pid: int | None  # the writing process; None for archives and unknown ids

    @property
    def is_archive(self) -> bool:
        return os.path.basename(self.path).split("_")[-1].startswith(_ARCHIVE_TAG)


def parse_file_name(path: str) -> FileName | None:
    match = _NAME.match(os.path.basename(path))
    if match is None:
        return None
    ident = match["id"].removeprefix("gpe-").split("-")[0]  # gpe-<pid>-<thread>
    pid = int(ident) if ident.isdigit() else None
    return FileName(path, match["type"], match["mode"] or "", pid)


# Every file name a process can have: prometheus_client's and ours. Building the names
# beats globbing, whose cost grows with the directory.
_GAUGE_MODES = ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
                "mostrecent", "livemostrecent")
_KINDS = ("counter", "histogram", "summary", *(f"gauge_{mode}" for mode in _GAUGE_MODES))


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
    for kind in _KINDS:
        for ident in idents:
            path = os.path.join(directory, f"{kind}_{ident}.db")
            if os.path.exists(path):
                name = parse_file_name(path)
                if name is not None:
                    found.append(name)
    return found


class DirectoryLock:
    """flock on a file in the directory: shared for scrapes, exclusive for folds.

    One open file per instance: flock locks belong to an open file, so two users in one
    process (the endpoint thread and the main loop) need their own to exclude each other.
    It works across processes too (two master generations during a USR2 re-exec).
    """

    def __init__(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class _ArchiveFile:
    def __init__(self, path: str) -> None:
        self.file = MetricFile(path)
        self._current: dict[str, tuple[float, float]] = {}

    def merge(self, key: str, value: float, timestamp: float, mode: str) -> None:
        pos = self.file.position(key)
        old = self._current.get(key) or self.file.stored(key)
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


class Archive:
    """One master's archive files, one per (type, gauge mode). Only its master writes them."""

    def __init__(self, directory: str, owner_pid: int) -> None:
        self._directory = directory
        self._owner = owner_pid
        self._files: dict[tuple[str, str], _ArchiveFile] = {}

    def _file(self, type_: str, mode: str) -> _ArchiveFile:
        archive = self._files.get((type_, mode))
        if archive is None:
            kind = f"{type_}_{mode}" if mode else type_
            path = os.path.join(self._directory, f"{kind}_{_ARCHIVE_TAG}{self._owner}.db")
            archive = self._files[(type_, mode)] = _ArchiveFile(path)
        return archive

    def fold(self, name: FileName) -> bool:
        """Add one dead process's file into the archive and remove it; False if kept."""
        if name.type == "gauge" and name.mode.startswith("live"):
            os.remove(name.path)
            return True
        if name.type == "gauge" and name.mode not in ("sum", "min", "max", "mostrecent"):
            return False  # "all" keeps one series per pid: nothing to fold into
        with open(name.path, "rb") as f:
            data = f.read()
        entries = list(read_entries(data)) if data else []
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
    and of this master are left alone.
    """
    folded = 0
    with lock.exclusive():
        for path in glob.glob(os.path.join(directory, "*.db")):
            name = parse_file_name(path)
            if name is None or name.type not in ("counter", "histogram", "summary", "gauge"):
                continue
            owner = name.pid
            if name.is_archive:
                ident = os.path.basename(path).rsplit(_ARCHIVE_TAG, 1)[1].removesuffix(".db")
                owner = int(ident) if ident.isdigit() else None
                if owner == os.getpid():
                    continue
            if owner is None or owner == os.getpid() or _alive(owner):
                continue
            with contextlib.suppress(FileNotFoundError, ValueError):
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
