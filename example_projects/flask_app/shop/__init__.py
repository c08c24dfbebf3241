"""Example Flask project for gunicorn-prom-ext: an app factory with a blueprint.

    cd example_projects/flask_app
    flask --app shop run-gunicorn -p 8000 -w 2        # metrics on :9091/metrics
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from flask_ext import PrometheusGunicorn

prom = PrometheusGunicorn()


@prom.when_ready
def ready(server: Any) -> None:
    # Runs in the gunicorn master. logging.getLogger("shop") is app.logger (Flask names it
    # after the app), which writes into gunicorn's error log.
    logging.getLogger(__name__).info("shop is ready: %s workers", server.num_workers)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    # Also served from the app's own port, behind the same auth as the master's endpoint.
    app.config["GUNICORN_PROMETHEUS_METRICS_ROUTE"] = "/metrics"
    app.config.from_prefixed_env()  # e.g. FLASK_GUNICORN_PROMETHEUS_NAMESPACE=shop
    app.config.update(config or {})

    from shop.views import catalog, register_errors

    app.register_blueprint(catalog)
    register_errors(app)

    @app.route("/")
    def index() -> str:
        return "shop: try /catalog/items/42, /catalog/fail, /metrics\n"

    prom.init_app(app)
    return app
