"""The ``GUNICORN_PROMETHEUS`` Django setting, read lazily.

Nothing here reads Django's settings at import: every function looks them up when
called, so ``override_settings`` and pytest-django's ``settings`` fixture take effect.

``GUNICORN_PROMETHEUS`` is a dict keyed by the core setting names in upper case
(``METRICS_PORT``, ``AUTH_USERNAME``, …; see the settings table in the README). In the
core's precedence it sits between the environment and the command line:
defaults < YAML file < environment < ``GUNICORN_PROMETHEUS`` < command line.
"""

from __future__ import annotations

from collections.abc import Mapping

from gunicorn_prom_ext.settings import ConfigError, Problem, Settings
from gunicorn_prom_ext.sources import ResolvedSettings, load_settings
from gunicorn_prom_ext.values import describe

SETTING_NAME = "GUNICORN_PROMETHEUS"
# A Django setting of its own: GUNICORN_PROMETHEUS holds the core's settings only (its
# keys are checked against the core's table), and this one concerns the middleware alone.
RAW_REGEX_ROUTES_SETTING = "GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES"
# How problems and `gunicorn-prom-ext`-style source listings name this layer.
FRAMEWORK_SOURCE = f"{SETTING_NAME} setting"
DJANGO_SETTINGS_SOURCE = "Django settings"

# The settings the running server resolved, set by the hooks in the master and so
# inherited by every forked worker (the /metrics view relays to exactly that endpoint).
_running: Settings | None = None


def raw_setting() -> object:
    """``settings.GUNICORN_PROMETHEUS`` as written; ``{}`` when absent."""
    from django.conf import settings

    value: object = getattr(settings, SETTING_NAME, None)
    return {} if value is None else value


def raw_regex_routes_setting() -> object:
    """``settings.GUNICORN_PROMETHEUS_RAW_REGEX_ROUTES`` as written; False when absent."""
    from django.conf import settings

    value: object = getattr(settings, RAW_REGEX_ROUTES_SETTING, False)
    return value


def raw_regex_routes() -> bool:
    """Whether ``re_path()`` routes are labelled with their raw regex. Only ``True``
    says so: any other value (system check E007) keeps the readable labels."""
    return raw_regex_routes_setting() is True


def framework_settings() -> Mapping[str, object]:
    """The setting as a mapping for the core. Anything else (system check E001) is a
    ConfigError: the server must not start as if it had been left out, since what it
    holds may be the auth the user meant to set (``"AUTH_TOKEN=secret"``)."""
    value = raw_setting()
    if not isinstance(value, Mapping):
        raise ConfigError([not_a_dict_problem(value)])
    return {str(key): item for key, item in value.items()}


def not_a_dict_problem(value: object) -> Problem:
    # Only the type is shown: a string here may well hold the secret.
    expected = f'a dict of settings, e.g. {SETTING_NAME} = {{"METRICS_PORT": 9091}}'
    return Problem(SETTING_NAME, DJANGO_SETTINGS_SOURCE, expected, describe(value, secret=True))


def resolve_settings() -> ResolvedSettings:
    """Every source merged as the server would (raises ConfigError listing all problems)."""
    return load_settings(framework=framework_settings(), framework_source=FRAMEWORK_SOURCE)


def set_running_settings(settings: Settings | None) -> None:
    global _running
    _running = settings


def running_settings() -> Settings:
    """The settings of the gunicorn server this process belongs to, else resolved now
    (under ``runserver`` or in tests)."""
    if _running is not None:
        return _running
    return resolve_settings().settings
