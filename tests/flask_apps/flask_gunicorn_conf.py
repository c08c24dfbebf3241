"""A project's own gunicorn config file: its hooks must keep running under run-gunicorn."""

import os
from typing import Any

workers = 3  # the command line's -w beats this


def _note(text: str) -> None:
    with open(os.environ["FLASK_NOTES"], "a") as f:
        f.write(f"{text} {os.getpid()}\n")


def when_ready(server: Any) -> None:
    _note("config when_ready")


def on_reload(server: Any) -> None:
    _note("config on_reload")
