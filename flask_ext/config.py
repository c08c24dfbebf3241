"""The extension's configuration: ``GUNICORN_PROMETHEUS_<SETTING>`` keys in ``app.config``.

Every core setting has a key (default ``None``: "not set here", so the environment, the
YAML file or the default applies), plus two keys of the extension's own. Read in
``init_app``: a bad value raises one ``ConfigError`` naming the app.config keys.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from gunicorn_prom_ext.settings import ConfigError, Problem, Settings
from gunicorn_prom_ext.sources import load_settings
from gunicorn_prom_ext.values import describe

if TYPE_CHECKING:
    from flask.config import Config

CONFIG_PREFIX = "GUNICORN_PROMETHEUS_"
# Keys of this extension only (not core settings).
METRICS_ROUTE_KEY = CONFIG_PREFIX + "METRICS_ROUTE"
APP_LOGGER_KEY = CONFIG_PREFIX + "APP_LOGGER"
_EXTENSION_KEYS = frozenset({METRICS_ROUTE_KEY, APP_LOGGER_KEY})
CONFIG_SOURCE = "app.config"
METRICS_ENDPOINT = "gunicorn_prometheus_metrics"


def config_key(field: str) -> str:
    """The app.config key of a core setting: ``metrics_port`` → GUNICORN_PROMETHEUS_METRICS_PORT."""
    return CONFIG_PREFIX + field.upper()


def read_config(config: Config) -> tuple[dict[str, object], Settings, str | None, bool]:
    """(core settings given in app.config, the resolved settings, metrics route, app_logger).

    Every problem is reported at once, as one ConfigError naming the app.config keys.
    """
    given: dict[str, object] = {
        key[len(CONFIG_PREFIX):]: value
        for key, value in config.items()
        if key.startswith(CONFIG_PREFIX) and key not in _EXTENSION_KEYS
    }
    problems: list[Problem] = []
    settings: Settings | None = None
    try:
        settings = load_settings(framework=given, framework_source=CONFIG_SOURCE).settings
    except ConfigError as exc:
        problems.extend(_named_by_config_key(p) for p in exc.problems)

    route = config.get(METRICS_ROUTE_KEY)
    if route in (None, "", False):
        route = None
    elif not isinstance(route, str) or not route.startswith("/"):
        problems.append(Problem(METRICS_ROUTE_KEY, CONFIG_SOURCE,
                                "a URL path starting with / (or None for no route)",
                                describe(route)))  # fmt: skip
    app_logger = config.get(APP_LOGGER_KEY)
    if not isinstance(app_logger, bool):
        problems.append(Problem(APP_LOGGER_KEY, CONFIG_SOURCE, "True or False",
                                describe(app_logger)))  # fmt: skip
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    framework = {k: v for k, v in given.items() if v is not None}
    return framework, settings, route, bool(app_logger)


def _named_by_config_key(problem: Problem) -> Problem:
    if problem.source != CONFIG_SOURCE:
        return problem
    hint = problem.hint
    if hint.startswith("did you mean "):
        hint = f"did you mean {CONFIG_PREFIX}{hint.removeprefix('did you mean ')}"
    return replace(problem, key=CONFIG_PREFIX + problem.key, hint=hint)
