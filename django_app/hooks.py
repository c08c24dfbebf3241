"""The core's gunicorn hooks, with ``GUNICORN_PROMETHEUS`` read from Django's settings.

The core reads its settings in the master's first hook; so does this subclass, and it
reads Django's settings there too — lazily, because under plain gunicorn
(``gunicorn mysite.wsgi -c python:django_app.gunicorn_conf``) nothing has configured
Django yet when the config module is imported, and DJANGO_SETTINGS_MODULE may only be
named inside ``mysite/wsgi.py``.

Reading the project's settings module may import prometheus_client (the trap described
in docs/design-notes.md): the directory is then exported and, if it is too late, the
master re-executes itself once, before it has bound a socket, as ``rungunicorn`` does.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

from gunicorn_prom_ext.hooks import PrometheusHooks
from gunicorn_prom_ext.launcher import REEXECUTED_ENV, export_multiproc_dir
from gunicorn_prom_ext.settings import ConfigError, Problem
from gunicorn_prom_ext.sources import load_settings
from gunicorn_prom_ext.storage.directory import (
    prometheus_client_single_process,
)

from . import conf

SETTINGS_MODULE_ENV = "DJANGO_SETTINGS_MODULE"


class DjangoPrometheusHooks(PrometheusHooks):
    def __init__(self, *, gunicorn_settings_applied: bool = False) -> None:
        super().__init__(
            framework=self._read_django_settings,
            framework_source=conf.FRAMEWORK_SOURCE,
            gunicorn_settings_applied=gunicorn_settings_applied,
        )

    def post_fork(self, arbiter: Any, worker: Any) -> None:
        super().post_fork(arbiter, worker)
        # For the /metrics view: the endpoint this server's master actually runs.
        conf.set_running_settings(self.settings)

    def _read_django_settings(self, arbiter: Any) -> Mapping[str, object]:
        """GUNICORN_PROMETHEUS, read in the master's first hook (the core calls this)."""
        framework = django_framework_settings(arbiter)
        # Checked against gunicorn's binds here too: a problem found only by the core's
        # load, after export_multiproc_dir made a private directory, would leave it behind.
        resolved = load_settings(framework=framework, framework_source=conf.FRAMEWORK_SOURCE,
                                 gunicorn_addresses=arbiter.cfg.address)  # fmt: skip
        if prometheus_client_single_process() and not os.environ.get(REEXECUTED_ENV):
            arbiter.log.info(
                "gunicorn-prom-ext: prometheus_client was imported before the metrics "
                "directory was set (by the Django settings or the gunicorn config); "
                "restarting the master once to put it in multiprocess mode"
            )
        export_multiproc_dir(resolved.settings)  # may re-execute this master (see above)
        return framework


def django_framework_settings(arbiter: Any) -> Mapping[str, object]:
    """``GUNICORN_PROMETHEUS`` of the project gunicorn serves; {} if no settings module is
    known. A settings module that fails to import stops the master with a clear error."""
    from django.conf import settings

    if not settings.configured:
        module = settings_module_for(arbiter)
        if module is None:
            arbiter.log.warning(
                "gunicorn-prom-ext: %s is not set and could not be found in the app module; "
                "GUNICORN_PROMETHEUS is not read (set %s or pass -e %s=...)",
                SETTINGS_MODULE_ENV, SETTINGS_MODULE_ENV, SETTINGS_MODULE_ENV,
            )  # fmt: skip
            return {}
        # What the app's wsgi.py will do moments later, in the worker (or with --preload).
        os.environ.setdefault(SETTINGS_MODULE_ENV, module)
    try:
        return conf.framework_settings()
    except ConfigError:
        raise  # GUNICORN_PROMETHEUS itself is wrong (not a dict)
    except Exception as exc:
        name = os.environ.get(SETTINGS_MODULE_ENV, "?")
        problem = Problem(
            SETTINGS_MODULE_ENV, "environment", "an importable Django settings module",
            f"{name!r}: {type(exc).__name__}: {exc}",
        )  # fmt: skip
        raise ConfigError([problem]) from exc


def settings_module_for(arbiter: Any) -> str | None:
    """DJANGO_SETTINGS_MODULE from the environment, gunicorn's ``-e``/``raw_env`` (applied
    to os.environ only after the first hook), or the ``os.environ.setdefault(...)`` line
    of the app module, read without importing it."""
    if os.environ.get(SETTINGS_MODULE_ENV):
        return os.environ[SETTINGS_MODULE_ENV]
    cfg = getattr(arbiter, "cfg", None)
    env = getattr(cfg, "env", None) or {}
    if env.get(SETTINGS_MODULE_ENV):
        return str(env[SETTINGS_MODULE_ENV])
    app_uri = getattr(getattr(arbiter, "app", None), "app_uri", None) or getattr(
        cfg, "wsgi_app", None
    )
    if not isinstance(app_uri, str) or not app_uri:
        return None
    return settings_module_in_source(app_uri.split(":", 1)[0])


def settings_module_in_source(module_name: str) -> str | None:
    """The literal of ``os.environ.setdefault("DJANGO_SETTINGS_MODULE", "...")`` (the line
    ``startproject`` writes into wsgi.py) in that module's source, if any."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), spec.origin)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and len(node.args) == 2
            and all(isinstance(arg, ast.Constant) for arg in node.args)
        ):
            key, value = (arg.value for arg in node.args if isinstance(arg, ast.Constant))
            if key == SETTINGS_MODULE_ENV and isinstance(value, str):
                return value
    return None
