"""The Django app: ``INSTALLED_APPS = [..., "django_app"]``."""

from __future__ import annotations

from django.apps import AppConfig


class GunicornPrometheusConfig(AppConfig):  # type: ignore[misc]  # Django is untyped
    name = "django_app"
    label = "django_app"
    verbose_name = "Gunicorn Prometheus metrics"

    def ready(self) -> None:
        # Nothing is started here (no server, no settings read): the metrics endpoint
        # belongs to the gunicorn master, not to `migrate` or `shell`.
        from django.core.checks import register

        from . import checks

        register(checks.check_gunicorn_prometheus)
        register(checks.check_middleware)
        register(checks.check_raw_regex_routes)
