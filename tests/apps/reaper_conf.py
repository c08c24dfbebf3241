"""A project's gunicorn.conf.py with a master thread that reaps a worker behind gunicorn's back.

Some code in a master (a library's child watcher, a careless ``os.wait()``) collects a
worker's exit before gunicorn does. gunicorn then finds the worker gone only when it next
signals it, and drops it through ``worker_exit`` in the master, never ``child_exit``.

Writing a pid into the file named by REAPER_TRIGGER makes the thread SIGKILL that worker and
reap it; it appends "reaped <pid>" (it won) or "missed <pid>" (gunicorn reaped it first) to
the file named by REAPER_LOG.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from gunicorn_prom_ext import install_hooks


def _note(line: str) -> None:
    with open(os.environ["REAPER_LOG"], "a") as f:
        f.write(line + "\n")


def _reap_on_request() -> None:
    trigger = os.environ["REAPER_TRIGGER"]
    while True:
        time.sleep(0.05)
        try:
            with open(trigger) as f:
                text = f.read().strip()
            os.unlink(trigger)
        except FileNotFoundError:
            continue
        pid = int(text)
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            _note(f"missed {pid}")
        else:
            _note(f"reaped {pid}")


def when_ready(server: Any) -> None:
    threading.Thread(target=_reap_on_request, daemon=True).start()


install_hooks(globals())
