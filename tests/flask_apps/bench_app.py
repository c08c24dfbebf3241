"""The overhead benchmark's Flask app: the same view, bare or with the extension.

    gunicorn 'bench_app:create_app()'                       (bare)
    gunicorn -c python:gunicorn_prom_ext.gunicorn_conf 'bench_app:create_app(instrumented=True)'
"""

from __future__ import annotations

from flask import Flask


def create_app(instrumented: bool = False) -> Flask:
    app = Flask(__name__)

    @app.route("/")
    def hello() -> str:
        return "Hello, World!\n"

    if instrumented:
        from flask_ext import PrometheusGunicorn

        PrometheusGunicorn(app)
    return app
