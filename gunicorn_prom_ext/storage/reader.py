"""Read the multiprocess directory for a scrape, where one bad file costs only that file.

prometheus_client's own collector fails the whole scrape on a single 0-byte or corrupt
``.db`` file. Here each metric file is checked first; a bad one is moved aside (renamed
``*.db.corrupt``, which nothing reads any more) and reported. Files that are not metric
files (see names.py) are never read nor touched.
Imported only once the multiprocess directory is set (it imports prometheus_client).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gunicorn_prom_ext.storage.files import read_entries, read_file
from gunicorn_prom_ext.storage.fold import BadFile, DirectoryLock, set_aside
from gunicorn_prom_ext.storage.names import metric_files

# prometheus_client creates its files empty and sizes them a moment later: an empty file
# this young is being born, not broken.
_NEWBORN_SECONDS = 30.0
# Keys already seen well-formed: a scrape then only walks a file's entries.
_KNOWN_KEYS_LIMIT = 100_000


def file_problem(path: str, known_keys: set[str]) -> str | None:
    """Why this file cannot be read (None if it can, or if it is being created)."""
    try:
        data = read_file(path)
    except FileNotFoundError:
        raise
    except OSError as exc:  # not a file at all (a FIFO, a directory), or not ours to read
        return exc.strerror or str(exc)
    if not data:
        age = time.time() - os.stat(path).st_mtime
        return None if age < _NEWBORN_SECONDS else "empty file"
    try:
        for entry in read_entries(data):
            if entry.key in known_keys:
                continue
            parsed = json.loads(entry.key)
            if not (isinstance(parsed, list) and len(parsed) == 4):
                return f"unexpected key {entry.key[:80]!r}"
            if len(known_keys) >= _KNOWN_KEYS_LIMIT:
                known_keys.clear()
            known_keys.add(entry.key)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return str(exc)[:200]
    return None


class FilesCollector(Collector):
    """The workers' and archives' samples, merged as prometheus_client merges them.

    ``before_read`` runs first on every scrape (the master checks that its directory is
    still there); ``on_bad_file`` is told of every file set aside.
    """

    def __init__(
        self,
        path: str,
        on_bad_file: BadFile,
        before_read: Callable[[], None] | None = None,
        lock: DirectoryLock | None = None,
    ) -> None:
        """``lock``: the process's one lock of this directory (the one folds take)."""
        self._path = path
        self._on_bad_file = on_bad_file
        self._before_read = before_read
        self._lock = lock or DirectoryLock(path)
        self._known_keys: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        if self._before_read is not None:
            self._before_read()
        if not os.path.isdir(self._path):
            # Gone, or replaced by a file, and not made again (before_read said so): the
            # page still has the server's own metrics.
            return []
        # Shared with other scrapes, exclusive of a fold (see fold.py).
        with self._lock.shared():
            try:
                return self._collect()
            except FileNotFoundError:
                # A file went between the check and the merge (a worker replacing a file
                # that was set aside, say): one more look finds the directory as it is.
                return self._collect()

    def _collect(self) -> list[Metric]:
        readable = self._readable()
        merged: list[Metric] = list(
            MultiProcessCollector.merge(readable, accumulate=True)  # type: ignore[no-untyped-call]
        )
        return merged

    def _readable(self) -> list[str]:
        """The metric files that can be read. When one had to be set aside, the directory
        is listed once more: the master writes its own files anew from memory at once
        (on_bad_file), and this scrape must not go without them."""
        for _ in range(2):
            readable, set_aside_some = [], False
            for name in metric_files(self._path)[0]:
                try:
                    problem = file_problem(name.path, self._known_keys)
                    if problem is None:
                        if os.path.getsize(name.path):
                            readable.append(name.path)
                        continue
                except FileNotFoundError:
                    continue  # removed since the listing (a dead worker's live gauges)
                set_aside(name.path, problem, self._on_bad_file)
                set_aside_some = True
            if not set_aside_some:
                break
        return readable
