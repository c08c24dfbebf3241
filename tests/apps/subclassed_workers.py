"""A project's own subclasses of gunicorn's sync and gthread workers (``-k
subclassed_workers.ProjectThreadedWorker``): gunicorn_worker_capacity must see what they
are."""

from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker


class ProjectThreadedWorker(ThreadWorker):  # type: ignore[misc]
    pass


class ProjectWorker(SyncWorker):  # type: ignore[misc]  # not named *SyncWorker: gunicorn keeps it, even with --threads
    pass
