"""A project's gunicorn config file, run with ``-c``: its hooks must keep running."""

import os

workers = 2


def when_ready(server):  # type: ignore[no-untyped-def]
    with open(os.environ["LAUNCHER_NOTES"], "a") as f:
        f.write(f"config when_ready {os.getpid()}\n")
