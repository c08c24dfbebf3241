"""A Flask app factory for the end-to-end tests of flask_ext.

It imports prometheus_client at import time and keeps its own counter (the trap of
prometheus_client's import-time storage choice): with ``flask run-gunicorn`` the counter
must still add up across workers.
Registered hooks note what ran, in which process, in the file named by FLASK_NOTES.
"""

from __future__ import annotations

import os
from typing import Any

import prometheus_client  # noqa: F401  (imported before anything could set the directory)
from flask import Blueprint, Flask, abort
from prometheus_client import Counter

from flask_ext import PrometheusGunicorn

HITS = Counter("app_hits", "Requests the views saw (the app's own metric).")
prom = PrometheusGunicorn()
things = Blueprint("things", __name__, url_prefix="/bp")


def note(text: str) -> None:
    path = os.environ.get("FLASK_NOTES")
    if path:
        with open(path, "a") as f:
            f.write(f"{text} {os.getpid()}\n")


@prom.on_starting
def announce(server: Any) -> None:
    note("ext on_starting")
    _APP[0].logger.info("extension hook says hello")  # lands in gunicorn's error log


@prom.when_ready
def broken(server: Any) -> None:
    raise RuntimeError("a registered hook that fails")


@prom.when_ready
def ready(server: Any) -> None:
    note("ext when_ready")


@prom.on_reload
def reloaded(server: Any) -> None:
    note("ext on_reload")


@prom.post_worker_init
def worker_ready(worker: Any) -> None:
    note("ext post_worker_init")


@prom.post_request
def after(worker: Any, req: Any) -> None:  # gunicorn's two-argument form
    if req.path == "/items/7":
        note("ext post_request")


_APP: list[Flask] = []  # the app the factory made, for the hooks above


@things.route("/things/<name>")
def thing(name: str) -> str:
    HITS.inc()
    return f"thing {name}\n"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env("TESTAPP")  # e.g. TESTAPP_GUNICORN_PROMETHEUS_METRICS_ROUTE

    @app.route("/")
    def index() -> str:
        HITS.inc()
        return "hello\n"

    @app.route("/items/<int:item_id>", methods=["GET", "POST"])
    def item(item_id: int) -> str:
        HITS.inc()
        return f"item {item_id}\n"

    @app.route("/boom")
    def boom() -> str:
        HITS.inc()
        raise RuntimeError("boom")

    @app.route("/teapot")
    def teapot() -> str:
        HITS.inc()
        abort(418)

    app.register_blueprint(things)
    prom.init_app(app)
    _APP.append(app)
    return app
