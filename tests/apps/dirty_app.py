"""A WSGI app whose requests call a gunicorn 25+ dirty worker (tests/test_dirty_workers.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.dirty import DirtyApp, get_dirty_client


class Squarer(DirtyApp):  # type: ignore[misc]
    def square(self, n: int) -> dict[str, int]:
        return {"result": n * n, "dirty_pid": os.getpid()}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["gunicorn_prom_ext.route"] = "/square"
    out = get_dirty_client().execute("dirty_app:Squarer", "square", 7)
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]
