"""A project's own gunicorn.conf.py: its own hooks, then the project's ``install_hooks``.

Every hook appends one line "<hook> <pid> [details]" to the file named by USERHOOKS_LOG
(O_APPEND, one write per line: safe from the master and every worker at once).
USERHOOKS_RAISE=<hook> makes that hook raise after writing its line; USERHOOKS_BARE=1 leaves
out ``install_hooks`` to see what gunicorn does with these hooks alone.
"""

from __future__ import annotations

import os
from typing import Any


def _note(hook: str, *details: object) -> None:
    line = " ".join([hook, str(os.getpid()), *map(str, details)]) + "\n"
    fd = os.open(os.environ["USERHOOKS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    if os.environ.get("USERHOOKS_RAISE") == hook:
        raise RuntimeError(f"userhooks: {hook} failed on purpose")


def nworkers_changed(server: Any, new_value: int, old_value: int | None) -> None:
    _note("nworkers_changed", new_value, old_value)


def when_ready(server: Any) -> None:
    _note("when_ready")


def pre_fork(server: Any, worker: Any) -> None:
    _note("pre_fork")


def post_fork(server: Any, worker: Any) -> None:
    _note("post_fork")


def post_request(worker: Any, req: Any) -> None:  # gunicorn accepts 2, 3 or 4 parameters
    _note("post_request", req.path)


def worker_exit(server: Any, worker: Any) -> None:
    _note("worker_exit")


def child_exit(server: Any, worker: Any) -> None:
    _note("child_exit", worker.pid)


def on_exit(server: Any) -> None:
    _note("on_exit")


if not os.environ.get("USERHOOKS_BARE"):
    from gunicorn_prom_ext.hooks import install_hooks

    install_hooks(globals())
