"""A project's own gunicorn config file, given to rungunicorn with -c: its settings take
gunicorn's precedence and its hooks still run (after the project's)."""

import os
from typing import Any

workers = 3
timeout = 45


def when_ready(server: Any) -> None:
    with open(os.environ["TEST_NOTES"], "a") as notes:
        notes.write(
            f"config when_ready {os.getpid()} timeout={server.cfg.timeout} "
            f"workers={server.cfg.workers}\n"
        )
