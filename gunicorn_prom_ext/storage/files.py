
"""Write prometheus_client's multiprocess file format, so its collector reads our series.

prometheus_client's own writer takes a process-wide lock and checks the pid on every
operation; the request path here writes a handful of doubles per request, so it keeps
its own positions and values and writes them straight into the mapping. The format
(see ``prometheus_client.mmap_dict``): a 4-byte "used" length, 4 bytes of padding, then
entries of a 4-byte key length, the UTF-8 JSON key padded to 8-byte alignment, and two
doubles (value, timestamp).

Each process writes only files it alone owns (``<type>_gpe-<pid>.db``); the name's
first part is what prometheus_client's collector reads as the metric type.

This module must not import prometheus_client: it is imported before the multiprocess
directory is set, and importing prometheus_client then would freeze it in
single-process mode.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import mmap
import os
import stat
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from gunicorn_prom_ext.natives import natives

_INITIAL_SIZE = 1 << 16
# Past this size a file grows in steps of this much instead of doubling, and a full disk
# falls back to the smallest step that fits: recording resumes as soon as a little room
# returns, not only once there is room for the next doubling.
_GROWTH_STEP = 1 << 20
_PAGE = 1 << 12
_INT = struct.Struct("i")
_TWO_DOUBLES = struct.Struct("dd")


def series_key(metric_name: str, sample_name: str, labels: dict[str, str], help_text: str) -> str:
    """The key prometheus_client stores a sample under (``mmap_dict.mmap_key``)."""
    return json.dumps([metric_name, sample_name, labels, help_text], sort_keys=True)


def le_label(bound: float) -> str:
    # The collector parses `le` with float() and formats it again, so any exact
    # float spelling works; "+Inf" is the one spelling float() and Go agree on.
    return "+Inf" if bound == math.inf else repr(float(bound))


def metric_file_path(directory: str, kind: str, ident: str) -> str:
    """``kind`` is ``histogram``, ``counter`` or ``gauge_<mode>`` (e.g. ``gauge_livesum``);
    ``ident`` the writer: ``<pid>``, or ``<pid>-<n>`` for the n-th thread of a process."""
    return os.path.join(directory, f"{kind}_gpe-{ident}.db")


class Entry(NamedTuple):
    key: str
    value: float
    timestamp: float
    pos: int  # offset of the value


def read_entries(data: bytes | mmap.mmap) -> Iterator[Entry]:
    """Every entry of a file's contents; ValueError if they are corrupt."""
    if len(data) < 8:
        raise ValueError("file shorter than its header")
    used = _INT.unpack_from(data, 0)[0]
    if used < 8 or used > len(data):
        raise ValueError(f"header says {used} bytes used, file has {len(data)}")
    pos = 8
    while pos < used:
        key_len = _INT.unpack_from(data, pos)[0]
        value_pos = pos + 4 + key_len + (8 - (key_len + 4) % 8)
        if key_len <= 0 or value_pos + 16 > used:
            raise ValueError(f"entry at offset {pos} runs past the used length")
        key = bytes(data[pos + 4 : pos + 4 + key_len]).decode("utf-8")
        value, timestamp = _TWO_DOUBLES.unpack_from(data, value_pos)
        yield Entry(key, value, timestamp, value_pos)
        pos = value_pos + 16


class NotARegularFile(OSError):
    """A FIFO, directory, symlink or device under a metric file's name: not a file of ours.
    (Opening a FIFO to read it would block the scrape, and with it every fold, forever.)"""


# Never through a symlink, never waiting for a FIFO's writer.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def read_file(path: str) -> bytes:
    """A metric file's whole contents; NotARegularFile if what has its name is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a socket or a device
            raise NotARegularFile(exc.errno, "not a regular file", path) from None
        raise
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file", path)
        return f.read()


def _entry_size(key: str) -> int:
    length = len(key.encode("utf-8"))
    return 4 + length + (8 - (length + 4) % 8) + 16


def _reserve(fd: int, size: int) -> None:
    """Allocate the space for real (a full disk fails here, not later with SIGBUS)."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:  # pragma: no cover - macOS
        os.ftruncate(fd, size)


class MetricFile:
    """One process's file of samples: add a key once, then set its value cheaply.

    Not thread safe: callers that write from several threads hold their own lock.
    Space is reserved with posix_fallocate before it is used, so a full disk shows up
    as an OSError here instead of a SIGBUS when the mapping is written.
    """

    def __init__(self, path: str, *, fresh: bool = False, detached: bool = False) -> None:
        """Open the file at ``path``, or create it; ``fresh``: always a new, empty file
        (replacing whatever is there: a file that went bad or is someone else's).

        ``detached``: no file at all yet, only memory (the directory is missing or the
        disk full): values are kept until they can be written into a real file.
        """
        self.path = path
        self._stored: dict[str, tuple[float, float]] = {}
        self._positions: dict[str, int] = {}
        if detached:
            self._fd, self._map = -1, mmap.mmap(-1, _INITIAL_SIZE)
            entries: list[Entry] = []
        else:
            self._fd, self._map = self._open(path, fresh)
            try:
                # A reused pid finds its predecessor's file: carry on from its values,
                # which keeps the sums right.
                entries = list(read_entries(self._map)) if self._map[:4] != b"\0" * 4 else []
            except (ValueError, UnicodeDecodeError):
                # Not a file of ours any more: set it aside and start anew.
                self._map.close()
                os.close(self._fd)
                with contextlib.suppress(OSError):
                    os.replace(path, path + ".corrupt")
                self._fd, self._map = self._open(path, fresh=True)
                entries = []
        # Values are 8-byte aligned doubles: writing one through a 'd' view is a single
        # aligned store (no packing, and a concurrent reader never sees half a value).
        # The request path writes ``doubles[pos >> 3]`` itself, skipping a method call.
        self.doubles = memoryview(self._map).cast("d")
        self._used: int = _INT.unpack_from(self._map, 0)[0] if entries else 8
        self._map[0:4] = _INT.pack(self._used)
        for entry in entries:
            self._positions[entry.key] = entry.pos
            self._stored[entry.key] = (entry.value, entry.timestamp)

    def _open(self, path: str, fresh: bool) -> tuple[int, mmap.mmap]:
        try:
            if fresh:
                raise FileNotFoundError
            fd = os.open(path, os.O_RDWR | _OPEN_FLAGS)
        except FileNotFoundError:
            fd = self._create(path)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise
            fd = self._replace_foreign(path)  # a symlink, a directory, a socket
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size < 8:  # a FIFO; nothing to map
                os.close(fd)
                fd = self._replace_foreign(path)
                info = os.fstat(fd)
            return fd, mmap.mmap(fd, info.st_size)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    def _replace_foreign(self, path: str) -> int:
        """Set aside what has the file's name without being a file of ours; a new one."""
        with contextlib.suppress(OSError):
            os.replace(path, path + ".corrupt")
        return self._create(path)

    @property
    def detached(self) -> bool:
        return self._fd < 0

    def _create(self, path: str) -> int:
        # Built under a name the collector does not read, then renamed into place: a
        # scrape must never find a half-made file (a 0-byte .db fails the whole scrape).
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.new"
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)  # a crashed predecessor's (same pid and thread): never followed
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o644)
        try:
            _reserve(fd, _INITIAL_SIZE)
            os.pwrite(fd, _INT.pack(8), 0)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return fd

    def _reserve(self, size: int) -> None:
        if self._fd >= 0:  # (a detached file is memory only)
            _reserve(self._fd, size)

    def position(self, key: str) -> int:
        """Offset of the key's value, adding the key (value 0) on first use."""
        pos = self._positions.get(key)
        if pos is None:
            pos = self._append(key)
        return pos

    def stored_value(self, key: str) -> float:
        """The value found in the file when it was opened (0 for a new key).

        Writers keep their own running values; this seeds them, so a reused file
        (same pid again) continues from where its predecessor stopped.
        """
        return self._stored.get(key, (0.0, 0.0))[0]

    def stored(self, key: str) -> tuple[float, float] | None:
        """(value, timestamp) found in the file when it was opened, if the key was there."""
        return self._stored.get(key)

    def stored_items(self) -> Iterable[tuple[str, tuple[float, float]]]:
        """Every (key, (value, timestamp)) found in the file when it was opened."""
        return self._stored.items()

    def make_room(self, keys: Iterable[str]) -> None:
        """Reserve the space these keys need now, so adding them cannot fail halfway."""
        new = {key for key in keys if key not in self._positions}
        self._grow_to(self._used + sum(_entry_size(key) for key in new))

    def _grow_to(self, end: int) -> None:
        size = len(self._map)
        if end <= size:
            return
        preferred = max(end, min(size * 2, size + _GROWTH_STEP))
        try:
            self._reserve(preferred)
            new_size = preferred
        except OSError:
            # Not enough room for a comfortable step: take just what this entry needs.
            new_size = -(-end // _PAGE) * _PAGE
            self._reserve(new_size)
        self.doubles.release()  # mmap refuses to resize while a view exists
        self._map.resize(new_size)
        self.doubles = memoryview(self._map).cast("d")

    def in_place(self) -> bool:
        """Whether the path still names this file (not deleted, renamed or replaced)."""
        if self._fd < 0:
            return False
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except OSError:
            return False

    def _append(self, key: str) -> int:
        encoded = key.encode("utf-8")
        padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
        entry = _INT.pack(len(encoded)) + padded + _TWO_DOUBLES.pack(0.0, 0.0)
        end = self._used + len(entry)
        self._grow_to(end)
        self._map[self._used : end] = entry
        self._used = end
        # Publish the entry only once it is complete: a reader stops at `used`.
        self._map[0:4] = _INT.pack(end)
        pos = end - 16
        self._positions[key] = pos
        return pos

    def write(self, pos: int, value: float) -> None:
        self.doubles[pos >> 3] = value

    def write_with_timestamp(self, pos: int, value: float, timestamp: float) -> None:
        self._map[pos : pos + 16] = _TWO_DOUBLES.pack(value, timestamp)

    def close(self) -> None:
        try:
            self.doubles.release()
            self._map.close()
        finally:
            if self._fd >= 0:
                os.close(self._fd)


class Counters:
    """A few rarely-bumped counters keyed by label values, kept in one process's file.

    Totals live in memory and are written through whenever the file can be had: on a
    full disk nothing is lost, the file catches up once space returns (``pending``).
    """

    def __init__(
        self, path: str, metric_name: str, help_text: str, label_names: Sequence[str]
    ) -> None:
        self._path = path
        self._metric_name = metric_name
        self._help = help_text
        self._label_names = tuple(label_names)
        self._file: MetricFile | None = None
        self._totals: dict[tuple[str, ...], float] = {}
        self._positions: dict[tuple[str, ...], int] = {}
        # Reentrant: a signal handler may count a fault in the holder. Real, not green:
        # the master's endpoint threads count faults too (natives.py).
        self._lock = natives().threading.RLock()
        self._fresh = False  # the next file is created anew, never adopted from the path
        self.pending = False  # totals not yet in the file

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._totals[label_values] = self._totals.get(label_values, 0.0) + amount
            self.pending = True
            with contextlib.suppress(OSError):
                self._flush()

    def flush(self) -> None:
        """Write what is pending; OSError (a full disk) leaves it pending."""
        with self._lock:
            self._flush()

    def relocate(self) -> None:
        """The file went away (its directory deleted, or set aside as bad): write the
        totals, which live in memory, into a new one."""
        with self._lock:
            if self._file is not None and self._file.in_place():
                return
            old, self._file = self._file, None
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
            self._positions.clear()
            self._fresh = True
            self.pending = True
            with contextlib.suppress(OSError):
                self._flush()

    def _flush(self) -> None:
        if self._file is None:
            self._file = MetricFile(self._path, fresh=self._fresh)
        for label_values in list(self._totals):
            pos = self._positions.get(label_values)
            if pos is None:
                labels = dict(zip(self._label_names, label_values, strict=True))
                name = self._metric_name
                key = series_key(name, name + "_total", labels, self._help)
                pos = self._file.position(key)
                # A reused file (same pid again) carries on from its predecessor's count.
                if not self._fresh:
                    self._totals[label_values] += self._file.stored_value(key)
                self._positions[label_values] = pos
            self._file.write(pos, self._totals[label_values])
        self.pending = False
