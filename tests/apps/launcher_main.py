"""A framework-style command built on GunicornLauncher, as the Django and Flask ones are.

It imports prometheus_client first, as a Django app or Flask app may at import time,
to show the command still ends up in multiprocess mode.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import prometheus_client  # noqa: F401  (the trap: imported before the directory exists)

from gunicorn_prom_ext.hooks import PrometheusHooks
from gunicorn_prom_ext.launcher import GunicornLauncher, export_multiproc_dir
from gunicorn_prom_ext.sources import load_settings


def load_app() -> Any:
    from testapp import app

    return app


def note_ready(arbiter: Any) -> None:
    with open(os.environ["LAUNCHER_NOTES"], "a") as f:
        f.write(f"extra when_ready {os.getpid()}\n")


def main() -> None:
    settings = load_settings().settings
    export_multiproc_dir(settings)
    GunicornLauncher(
        load_app,
        sys.argv[1:],
        hooks=PrometheusHooks(),
        defaults={"bind": ["127.0.0.1:1"], "workers": 3},
        extra_hooks={"when_ready": [note_ready]},
        prog="launcher_main",
    ).run()


if __name__ == "__main__":
    main()
