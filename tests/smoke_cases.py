"""The worker classes the smoke set (test_smoke.py) runs, and which gunicorn releases have each.

scripts/matrix_rows.py names these ids per row; ``GPE_SMOKE_CASES`` (a comma-separated list of
ids) selects them for one run. Without it, every case the installed gunicorn has is run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import version

from harness import APPS_DIR, DEFAULT_CONFIG

SELECTION_ENV = "GPE_SMOKE_CASES"
Release = tuple[int, int]


@dataclass(frozen=True)
class WorkerCase:
    id: str
    summary: str  # what a user writes, for the README table
    args: tuple[str, ...]
    app: str
    config: str = DEFAULT_CONFIG
    modules: tuple[str, ...] = ()  # third-party modules the worker class needs
    first: Release = (22, 0)  # first gunicorn release that has it
    removed_in: Release | None = None  # first gunicorn release that no longer has it

    def exists_in(self, release: Release) -> bool:
        return release >= self.first and (self.removed_in is None or release < self.removed_in)


WSGI = "smoke_wsgi:app"
ASGI = "smoke_asgi:app"

CASES: tuple[WorkerCase, ...] = (
    WorkerCase("sync", "`-k sync`", ("-k", "sync"), WSGI),
    WorkerCase("gthread", "`-k gthread --threads 2`", ("-k", "gthread", "--threads", "2"), WSGI),
    WorkerCase("gevent", "`-k gevent` (the worker patches)", ("-k", "gevent"), WSGI,
               modules=("gevent",)),
    WorkerCase(
        "gevent-early",
        "`-k gevent`, config file calls `patch_all()` then `install_hooks`",
        ("-k", "gevent"),
        WSGI,
        config=str(APPS_DIR / "gevent_early_conf.py"),
        modules=("gevent",),
    ),
    WorkerCase("eventlet", "`-k eventlet`", ("-k", "eventlet"), WSGI, modules=("eventlet",),
               removed_in=(26, 0)),
    WorkerCase("asgi", "`-k asgi`", ("-k", "asgi"), ASGI, first=(24, 0)),
    WorkerCase("asgi-accesslog", "`-k asgi --access-logfile -`",
               ("-k", "asgi", "--access-logfile", "-"), ASGI, first=(24, 0)),
    WorkerCase("gevent-pywsgi", "`-k gunicorn.workers.ggevent.GeventPyWSGIWorker`",
               ("-k", "gunicorn.workers.ggevent.GeventPyWSGIWorker"), WSGI, modules=("gevent",)),
    WorkerCase("tornado", "`-k tornado` (a WSGI app)", ("-k", "tornado"), WSGI,
               modules=("tornado",)),
    WorkerCase("uvicorn", "`-k uvicorn.workers.UvicornWorker`",
               ("-k", "uvicorn.workers.UvicornWorker"), ASGI, modules=("uvicorn",)),
    WorkerCase("uvicorn-worker", "`-k uvicorn_worker.UvicornWorker`",
               ("-k", "uvicorn_worker.UvicornWorker"), ASGI, modules=("uvicorn_worker",)),
)  # fmt: skip
BY_ID = {case.id: case for case in CASES}


def release_of(text: str) -> Release:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def installed_gunicorn() -> Release:
    return release_of(version("gunicorn"))


def selected_cases() -> list[WorkerCase]:
    """The cases to run here: those named in GPE_SMOKE_CASES, else all this gunicorn has.

    A named case that is unknown or that this gunicorn lacks is an error, not a skip: the
    matrix must run exactly what it claims.
    """
    release = installed_gunicorn()
    names = [n.strip() for n in os.environ.get(SELECTION_ENV, "").split(",") if n.strip()]
    if not names:
        return [case for case in CASES if case.exists_in(release)]
    unknown = [n for n in names if n not in BY_ID]
    if unknown:
        raise ValueError(f"{SELECTION_ENV}: unknown smoke cases {unknown}; known: {list(BY_ID)}")
    absent = [n for n in names if not BY_ID[n].exists_in(release)]
    if absent:
        raise ValueError(
            f"{SELECTION_ENV}: gunicorn {version('gunicorn')} has no worker for {absent}"
        )
    return [BY_ID[n] for n in names]
