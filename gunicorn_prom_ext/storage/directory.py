"""The multiprocess directory's life: choose or create it, wipe stale files, remove it.

prometheus_client picks its storage when it is first imported, from
PROMETHEUS_MULTIPROC_DIR, so the directory must be in the environment before anything
in the master or a worker imports it (FIELD-NOTES §2).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass

from gunicorn_prom_ext.settings import ConfigError, Problem, Settings

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Carries a private directory across a USR2 re-exec, so the new master adopts it
# (instead of starting from zero) and knows it must remove it at exit.
PRIVATE_DIR_ENV = "GUNICORN_PROM_EXT_PRIVATE_DIR"


@dataclass(frozen=True)
class MultiprocDirectory:
    path: str
    private: bool  # created by this package, removed when its last master exits


def prepare_directory(
    settings: Settings, *, reexec: bool, environ: MutableMapping[str, str]
) -> MultiprocDirectory:
    """Pick the directory, export it for prometheus_client and the workers.

    A fresh start wipes files left by an earlier run (their counts would be added to
    this run's); a USR2 re-exec must not, because the old generation is still writing.
    """
    handed_over = environ.pop(PRIVATE_DIR_ENV, None)
    configured = os.path.abspath(settings.multiproc_dir) if settings.multiproc_dir else None
    # Handed over by the previous master (USR2) or by a framework command that made it
    # before importing the app (launcher.py): ours to remove at exit.
    if (
        handed_over
        and os.path.isdir(handed_over)
        and (reexec or configured in (None, os.path.abspath(handed_over)))
    ):
        directory = MultiprocDirectory(handed_over, private=True)
    elif settings.multiproc_dir:
        path = os.path.abspath(settings.multiproc_dir)
        os.makedirs(path, exist_ok=True)
        if not reexec and settings.cleanup_db_files:
            wipe_stale_files(path)
        directory = MultiprocDirectory(path, private=False)
    else:
        directory = MultiprocDirectory(tempfile.mkdtemp(prefix="gunicorn-prom-ext-"), True)
    environ[MULTIPROC_DIR_ENV] = directory.path
    return directory


def wipe_stale_files(path: str) -> int:
    removed = 0
    for name in glob.glob(os.path.join(path, "*.db")):
        try:
            os.remove(name)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def remove_directory(directory: MultiprocDirectory) -> None:
    if directory.private:
        shutil.rmtree(directory.path, ignore_errors=True)


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
