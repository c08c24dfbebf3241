"""Flask adapter for gunicorn-prom-ext: ``PrometheusGunicorn`` and ``flask run-gunicorn``.

``from flask_ext import PrometheusGunicorn``; the command is ``flask_ext.cli``, registered
as a ``flask.commands`` entry point.
"""

from flask_ext.extension import (
    APP_LOGGER_KEY,
    CONFIG_PREFIX,
    EXTENSION_KEY,
    METRICS_ROUTE_KEY,
    FlaskState,
    PrometheusGunicorn,
    config_key,
)

__all__ = [
    "APP_LOGGER_KEY",
    "CONFIG_PREFIX",
    "EXTENSION_KEY",
    "METRICS_ROUTE_KEY",
    "FlaskState",
    "PrometheusGunicorn",
    "config_key",
]
