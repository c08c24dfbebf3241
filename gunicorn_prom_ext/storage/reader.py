"""Read the multiprocess directory for a scrape, where one bad file costs only that file.

prometheus_client's own collector fails the whole scrape on a single 0-byte or corrupt
``.db`` file (client_python #1199). Here each file is checked first; a bad one is moved
aside (renamed to ``*.db.corrupt``, which the collector no longer reads) and reported.
Imported only once the multiprocess directory is set (it imports prometheus_client).
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gunicorn_prom_ext.storage.files import read_entries
from gunicorn_prom_ext.storage.fold import DirectoryLock

# prometheus_client creates its files empty and sizes them a moment later: an empty file
# this young is being born, not broken.
_NEWBORN_SECONDS = 30.0


# Keys already seen well-formed: a scrape then only walks a file's entries.
_KNOWN_KEYS_LIMIT = 100_000


def file_problem(path: str, known_keys: set[str]) -> str | None:
    """Why this file cannot be read (None if it can, or if it is being created)."""
    with open(path, "rb") as f:
        data = f.read()
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
    except (ValueError, UnicodeDecodeError) as exc:
        return str(exc)
    return None


class FilesCollector(Collector):
    def __init__(self, path: str, on_bad_file: Callable[[str, str], None]) -> None:
        self._path = path
        self._on_bad_file = on_bad_file
        self._lock = DirectoryLock(path)
        self._known_keys: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        # Shared with other scrapes, exclusive of a fold (see fold.py).
        with self._lock.shared():
            return self._collect()

    def _collect(self) -> Iterable[Metric]:
        readable = []
        for name in glob.glob(os.path.join(self._path, "*.db")):
            try:
                problem = file_problem(name, self._known_keys)
                if problem is None:
                    if os.path.getsize(name):
                        readable.append(name)
                    continue
                os.replace(name, name + ".corrupt")
            except FileNotFoundError:
                continue  # removed since the glob (a dead worker's live gauges)
            self._on_bad_file(name, problem)
        merged: Iterable[Metric] = MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
            readable, accumulate=True
        )
        return merged
