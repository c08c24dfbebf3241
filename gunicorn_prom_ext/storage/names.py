"""Which files in the multiprocess directory are metric files, and whose.

Only files named the way prometheus_client and this package name theirs are ever wiped,
folded, read or set aside; anything else in the directory (someone's ``app.db``, say) is
left alone:

- prometheus_client: ``<type>_<pid>.db`` and ``gauge_<mode>_<pid>.db``;
- this package: ``<type>_gpe-<pid>.db`` (a process), ``<type>_gpe-<pid>-<n>.db`` (the n-th
  thread of a worker) and ``<type>_archive-<master pid>.db`` (folded dead workers).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

GAUGE_MODES = ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
               "mostrecent", "livemostrecent")  # fmt: skip
KINDS = ("counter", "histogram", "summary", *(f"gauge_{mode}" for mode in GAUGE_MODES))
ARCHIVE_TAG = "archive-"

_NAME = re.compile(
    r"(?P<type>counter|histogram|summary|gauge)_"
    rf"(?:(?P<mode>{'|'.join(GAUGE_MODES)})_)?"
    r"(?P<id>[0-9]+|gpe-(?P<gpe>[0-9]+)(?:-[0-9]+)?|archive-(?P<archive>[0-9]+))\.db",
    re.ASCII,
)


@dataclass(frozen=True)
class FileName:
    path: str
    type: str
    mode: str  # gauge mode, "" for other types
    pid: int  # the process that wrote it; for an archive, the master that owns it
    is_archive: bool


def parse_file_name(path: str) -> FileName | None:
    """The metric file's parts, or None for a file that is not one of ours or
    prometheus_client's (a gauge needs a mode, other types must not have one)."""
    match = _NAME.fullmatch(os.path.basename(path))
    if match is None or (match["type"] == "gauge") != (match["mode"] is not None):
        return None
    ident = match["archive"] or match["gpe"] or match["id"]
    return FileName(path, match["type"], match["mode"] or "", int(ident),
                    match["archive"] is not None)  # fmt: skip


def metric_files(directory: str) -> tuple[list[FileName], list[str]]:
    """(metric files, other ``*.db`` files) in the directory."""
    ours, foreign = [], []
    for path in glob.glob(os.path.join(glob.escape(directory), "*.db")):
        name = parse_file_name(path)
        if name is None:
            foreign.append(path)
        else:
            ours.append(name)
    return ours, foreign
