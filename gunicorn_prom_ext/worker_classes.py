"""How requests are recorded for a gunicorn worker class: one recording core, two ways in.

- ``hooks``: the worker calls gunicorn's pre_request/post_request around the WSGI app
  with the response object (sync, gthread, gevent, eventlet): they record.
- ``asgi`` / ``wsgi``: the worker never calls them, or calls them without the status
  (gunicorn's asgi worker passes ``environ=None, resp=None`` unless access logging is
  on): a middleware wrapped around the loaded app in post_worker_init records instead
  (gunicorn's asgi worker and uvicorn's workers: ASGI; gevent's pywsgi and tornado's
  workers: WSGI).

The master logs the way once at start, so a set-up that cannot be measured says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Way = Literal["hooks", "asgi", "wsgi"]


@dataclass(frozen=True)
class Recording:
    way: Way
    app_attribute: str  # the worker attribute holding the loaded app (middleware ways)
    how: str  # for the start-up line
    # uvicorn's worker ends a graceful exit by re-raising SIGTERM (or SIGINT) at itself
    # (see worker.py)
    notes_graceful_sigterm: bool = False
    # uvicorn enforces --max-requests itself and never counts in worker.nr: the
    # middleware's count of the requests it finished stands in for it.
    counts_requests_itself: bool = False
    # uvicorn runs ASGI 2 apps too, telling them apart by its own rule (middleware.py);
    # gunicorn's asgi worker calls whatever it loaded as an ASGI 3 app.
    runs_asgi2: bool = False
    # Each OS thread serves one request at a time (sync, gthread), not many (greenlets).
    one_request_per_thread: bool = False

    def describe(self, worker_class: str) -> str:
        return f"worker class {worker_class}: requests are recorded {self.how}"


HOOKS = Recording(
    "hooks", "", "by gunicorn's pre_request/post_request hooks", one_request_per_thread=True
)
HOOKS_GREEN = Recording("hooks", "", "by gunicorn's pre_request/post_request hooks")
ASGI_WORKER = Recording(
    "asgi", "asgi",
    "by an ASGI middleware around the app (gunicorn's asgi worker gives post_request no "
    "status unless access logging is on)",
)  # fmt: skip
UVICORN = Recording(
    "asgi", "wsgi", "by an ASGI middleware around the app (uvicorn's workers call no hooks)",
    notes_graceful_sigterm=True, counts_requests_itself=True, runs_asgi2=True,
)  # fmt: skip
HOOKS_IF_CALLED = Recording(
    "hooks", "",
    "by gunicorn's pre_request/post_request hooks, if this worker class calls them (gunicorn's "
    "sync, gthread, gevent and eventlet workers do; one that does not records nothing)",
)  # fmt: skip
_THREAD_WORKERS = frozenset({
    "gunicorn.workers.sync.SyncWorker",
    "gunicorn.workers.gthread.ThreadWorker",
})
WSGI_MIDDLEWARE = Recording(
    "wsgi", "wsgi", "by a WSGI middleware around the app (this worker calls no request hooks)"
)


def class_names(worker_class: type) -> set[str]:
    """The dotted names of a worker class and of every class it derives from."""
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in worker_class.__mro__}


def recording_for(worker_class: type) -> Recording:
    names = class_names(worker_class)
    if "gunicorn.workers.ggevent.GeventPyWSGIWorker" in names:
        return WSGI_MIDDLEWARE
    if "gunicorn.workers.gtornado.TornadoWorker" in names:
        return WSGI_MIDDLEWARE
    if "gunicorn.workers.gasgi.ASGIWorker" in names:
        return ASGI_WORKER
    # A project's own subclass (uvicorn's docs suggest one to set CONFIG_KWARGS) too.
    if any(name.split(".")[0] in ("uvicorn", "uvicorn_worker") for name in names):
        return UVICORN
    if names & _THREAD_WORKERS:
        return HOOKS
    if "gunicorn.workers.base_async.AsyncWorker" in names:
        return HOOKS_GREEN  # gevent, eventlet
    return HOOKS_IF_CALLED


def serves_asgi(cfg: Any) -> bool:
    """Whether the worker class of a gunicorn configuration calls the app as an ASGI app
    (uvicorn's, gunicorn's asgi): what a framework command must hand it. The class is
    loaded without ``cfg.worker_class``, which would run its setup() a second time."""
    from gunicorn.util import load_class

    uri = cfg.settings["worker_class"].get()
    worker_class = uri if isinstance(uri, type) else load_class(uri)
    return recording_for(worker_class).way == "asgi"
