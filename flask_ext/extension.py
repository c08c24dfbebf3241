"""``PrometheusGunicorn``: the Flask extension.

It follows Flask's extension conventions (as flask-sqlalchemy does): ``init_app`` for
app factories, its per-app state in ``app.extensions["gunicorn_prometheus"]``, settings
read from ``app.config`` in ``init_app``, and no app stored on the extension object, so
one extension can serve several apps.

What it does for an app:

* route labels: after each request the matched rule (``request.url_rule.rule``, e.g.
  ``/items/<int:item_id>``) is put in the WSGI environ under ``ROUTE_ENVIRON_KEY``,
  where the core's post_request hook reads it. Unmatched requests get no route.
* configuration: ``GUNICORN_PROMETHEUS_<SETTING>`` keys for every core setting (defaults
  ``None``: "not set here", so the environment, the YAML file or the default applies),
  validated in ``init_app``: a bad value raises one ``ConfigError`` naming the key.
* gunicorn server hooks registered as decorators (``@prom.on_starting`` …, all fifteen),
  chained after the project's own; a failure is logged through ``app.logger`` and
  contained.
* ``app.logger`` writes into gunicorn's error log while gunicorn serves the app.
* an optional ``/metrics`` route that relays the master's endpoint.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from flask import request as _request

from flask_ext.config import (
    APP_LOGGER_KEY,
    CONFIG_PREFIX,
    CONFIG_SOURCE,
    METRICS_ROUTE_KEY,
    config_key,
    read_config,
)
from flask_ext.gunicorn_log import GunicornErrorLogHandler, share_gunicorn_log
from gunicorn_prom_ext.chaining import HOOK_ARITY, with_arity
from gunicorn_prom_ext.hooks import PrometheusHooks
from gunicorn_prom_ext.labels import ROUTE_ENVIRON_KEY
from gunicorn_prom_ext.settings import SETTINGS, Settings

if TYPE_CHECKING:
    from flask import Flask
    from flask.wrappers import Response

__all__ = [  # names the package and the command import from here
    "APP_LOGGER_KEY",
    "CONFIG_PREFIX",
    "CONFIG_SOURCE",
    "EXTENSION_KEY",
    "METRICS_ROUTE_KEY",
    "FlaskState",
    "GunicornErrorLogHandler",
    "PrometheusGunicorn",
    "config_key",
    "share_gunicorn_log",
]

EXTENSION_KEY = "gunicorn_prometheus"
METRICS_ENDPOINT = "gunicorn_prometheus_metrics"

# The hooks gunicorn calls in the master; the others run in a worker.
MASTER_HOOKS = frozenset(
    {"nworkers_changed", "on_starting", "when_ready", "pre_fork", "pre_exec", "on_reload",
     "child_exit", "on_exit"}
)  # fmt: skip
# Worker hooks gunicorn calls after the worker has loaded the app (plain gunicorn can run
# these from an app loaded in the worker). post_fork runs before that.
AFTER_LOAD_WORKER_HOOKS = ("post_worker_init", "worker_int", "worker_abort", "pre_request",
                           "post_request", "worker_exit")  # fmt: skip
# Called on every request: only installed when something is registered for them.
_PER_REQUEST_HOOKS = frozenset({"pre_request", "post_request"})

Hook = Callable[..., Any]
H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class FlaskState:
    """What ``init_app`` leaves in ``app.extensions["gunicorn_prometheus"]``."""

    extension: PrometheusGunicorn
    # Core settings given in app.config, by setting name (METRICS_PORT …), for the
    # master's hooks (``PrometheusHooks(framework=…)``).
    framework: Mapping[str, object]
    settings: Settings
    metrics_route: str | None
    app_logger: bool
    # The settings the gunicorn master runs with, as far as this process knows: the
    # same as ``settings`` unless plain gunicorn started the master without app.config.
    master_settings: Settings


class PrometheusGunicorn:
    """Prometheus metrics for a Flask app served by gunicorn.

    ``prom = PrometheusGunicorn(app)`` or, in an app factory, ``prom = PrometheusGunicorn()``
    at module level and ``prom.init_app(app)`` in the factory. Hooks registered with the
    decorators (``@prom.when_ready`` …) belong to the extension and run for whichever of
    its apps gunicorn serves.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._hooks: dict[str, list[Hook]] = {name: [] for name in HOOK_ARITY}
        # The core hooks (plain gunicorn) this extension's hooks were added to, by id.
        self._attached: set[int] = set()
        if app is not None:
            self.init_app(app)

    # -- set-up ---------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"PrometheusGunicorn is already registered on the Flask app {app.name!r}: "
                "call init_app once per app (app.extensions already has "
                f"{EXTENSION_KEY!r})"
            )
        for spec in SETTINGS:
            app.config.setdefault(config_key(spec.field), None)
        app.config.setdefault(METRICS_ROUTE_KEY, None)
        app.config.setdefault(APP_LOGGER_KEY, True)
        framework, settings, route, app_logger = read_config(app.config)

        core = serving_hooks()
        # Under plain gunicorn the master read its settings before any app was loaded:
        # app.config cannot change them, and the /metrics route must reach that master.
        master_settings = core.settings if core is not None and core.settings else settings
        state = FlaskState(self, framework, settings, route, app_logger, master_settings)
        app.extensions[EXTENSION_KEY] = state
        _label_routes(app)
        if route:
            app.add_url_rule(route, METRICS_ENDPOINT, _metrics_view, methods=["GET"])
        if core is not None and id(core) not in self._attached:
            self._attached.add(id(core))  # once per process, however many apps
            self._attach(app, state, core)

    # -- hooks ----------------------------------------------------------------------------
    # Each decorator registers one function for that gunicorn server hook and returns it
    # unchanged. It is called with gunicorn's arguments, after the project's own hook
    # (a -c config file's); for worker_exit and on_exit, before it.

    def nworkers_changed(self, fn: H) -> H:
        return self._register("nworkers_changed", fn)

    def on_starting(self, fn: H) -> H:
        return self._register("on_starting", fn)

    def when_ready(self, fn: H) -> H:
        return self._register("when_ready", fn)

    def pre_fork(self, fn: H) -> H:
        return self._register("pre_fork", fn)

    def post_fork(self, fn: H) -> H:
        return self._register("post_fork", fn)

    def post_worker_init(self, fn: H) -> H:
        return self._register("post_worker_init", fn)

    def worker_int(self, fn: H) -> H:
        return self._register("worker_int", fn)

    def worker_abort(self, fn: H) -> H:
        return self._register("worker_abort", fn)

    def pre_exec(self, fn: H) -> H:
        return self._register("pre_exec", fn)

    def pre_request(self, fn: H) -> H:
        return self._register("pre_request", fn)

    def post_request(self, fn: H) -> H:
        return self._register("post_request", fn)

    def child_exit(self, fn: H) -> H:
        return self._register("child_exit", fn)

    def worker_exit(self, fn: H) -> H:
        return self._register("worker_exit", fn)

    def on_reload(self, fn: H) -> H:
        return self._register("on_reload", fn)

    def on_exit(self, fn: H) -> H:
        return self._register("on_exit", fn)

    def hook(self, name: str) -> Callable[[H], H]:
        """``@prom.hook("when_ready")``: the same, with the hook's name as a string."""
        if name not in HOOK_ARITY:
            raise ValueError(f"unknown gunicorn hook {name!r}; one of {', '.join(HOOK_ARITY)}")
        return lambda fn: self._register(name, fn)

    def registered(self, name: str) -> tuple[Hook, ...]:
        """The functions registered for one hook, in order (post_request ones as gunicorn
        calls them, with four arguments)."""
        return tuple(self._hooks[name])

    def _register(self, name: str, fn: H) -> H:
        from gunicorn.config import validate_callable, validate_post_request

        try:
            hook = validate_post_request(fn) if name == "post_request" else (
                validate_callable(HOOK_ARITY[name])(fn)
            )  # fmt: skip
        except TypeError as exc:
            raise TypeError(
                f"@{type(self).__name__}.{name}: {_describe_fn(fn)} does not fit gunicorn's "
                f"{name} hook ({exc})"
            ) from None
        if hook is not fn:  # post_request of arity 2 or 3, adapted to gunicorn's 4
            # Named after theirs for log messages; no __wrapped__, so the arity stays 4.
            functools.update_wrapper(hook, fn, assigned=("__module__", "__name__", "__qualname__"),
                                     updated=())  # fmt: skip
            del hook.__wrapped__
        self._hooks[name].append(hook)
        return fn

    def gunicorn_hooks(
        self, app: Flask, names: Iterable[str] | None = None
    ) -> dict[str, list[Hook]]:
        """One dispatcher per hook name, for ``GunicornLauncher(extra_hooks=…)``.

        Default names: every master- and worker-side hook, except pre_request and
        post_request when nothing is registered for them (they run on every request).
        The on_starting dispatcher also points ``app.logger`` at gunicorn's error log.
        """
        if names is None:
            names = [n for n in HOOK_ARITY if n not in _PER_REQUEST_HOOKS or self._hooks[n]]
        state = _state(app)
        return {
            name: [self._dispatcher(name, app.logger, state.app_logger)] for name in names
        }

    def _dispatcher(self, name: str, logger: logging.Logger, share_log: bool) -> Hook:
        """A hook of gunicorn's exact arity running this extension's functions for ``name``.

        Each runs on its own: an exception is logged through ``logger`` (app.logger) with
        its traceback and the next one still runs; nothing reaches gunicorn.
        """
        hooks = self._hooks[name]  # the live list: later registrations are seen
        bridge = share_log and name in ("on_starting", "on_reload", "post_worker_init")

        def run(*args: Any) -> None:
            if bridge:
                share_gunicorn_log(logger, args[0].log)
            for fn in hooks:
                try:
                    fn(*args)
                except Exception:
                    logger.exception(
                        "gunicorn-prom-ext: %s hook %s failed", name, _describe_fn(fn)
                    )

        return with_arity(name, run, qualname=f"flask_ext_{name}")

    # -- plain gunicorn -------------------------------------------------------------------

    def _attach(self, app: Flask, state: FlaskState, core: PrometheusHooks) -> None:
        """gunicorn is loading the app under the core's hooks: run ours through them.

        The app module may register hooks after ``init_app`` (decorators further down),
        so the dispatchers are added once it is fully loaded: at post_worker_init in a
        worker, at on_starting in a --preload master. What ran before that is named in
        a warning.
        """
        logger = app.logger
        keys = sorted(config_key(k) for k, v in state.framework.items() if v not in (None, ""))
        runs: tuple[str, ...]
        if core.role == "worker":
            first, runs = "post_worker_init", AFTER_LOAD_WORKER_HOOKS
            remedy = "`flask run-gunicorn` (or gunicorn --preload for the master-side ones)"
        else:
            first, runs = "on_starting", tuple(n for n in HOOK_ARITY if n != "nworkers_changed")
            remedy = "`flask run-gunicorn`"

        def loaded(server: Any) -> None:
            if state.app_logger:
                share_gunicorn_log(logger, server.log)
            for name in HOOK_ARITY:
                if name in runs and self._hooks[name]:
                    # Appended while `first` runs: the dispatcher for `first` runs now too.
                    core.add(name, self._dispatcher(name, logger, state.app_logger))
            missed = [n for n in HOOK_ARITY if self._hooks[n] and n not in runs]
            if missed:
                logger.warning(
                    "gunicorn-prom-ext: registered %s hook(s) will not run: gunicorn ran them "
                    "before it loaded the app. Serve the app with %s",
                    ", ".join(missed),
                    remedy,
                )
            if keys:
                logger.warning(
                    "gunicorn-prom-ext: %s in app.config not applied: gunicorn's master read "
                    "its settings before the app was loaded. Set them in the environment or "
                    "the YAML file, or serve the app with `flask run-gunicorn`",
                    ", ".join(keys),
                )

        core.add(first, loaded)


def _state(app: Flask) -> FlaskState:
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, FlaskState):
        raise RuntimeError(f"PrometheusGunicorn is not registered on the Flask app {app.name!r}")
    return state


# -- requests ---------------------------------------------------------------------------------


def _label_routes(app: Flask) -> None:
    """Name the matched route in the WSGI environ, for the core's post_request hook.

    A teardown_request function: Flask runs those for every request, after any error
    handling and even when a before_request function answered early, while the request
    (and its ``url_rule``, None for a 404 or 405) is still there. The environ is the one
    gunicorn passes to post_request.
    """
    app.teardown_request(_set_route)


def _set_route(exc: BaseException | None) -> None:
    # Runs for every request: resolve the request proxy once, then plain attributes.
    req = _request._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
    rule = req.url_rule
    if rule is not None:
        req.environ[ROUTE_ENVIRON_KEY] = rule.rule


def _metrics_view() -> Response:
    """The master's /metrics, relayed: same page, same auth (the Authorization header is
    passed through and checked by the master)."""
    from flask import Response, current_app, request

    from gunicorn_prom_ext.relay import relay_scrape

    state = _state(current_app)
    status, headers, body = relay_scrape(state.master_settings, dict(request.headers.items()))
    return Response(body, status=status, headers=headers)


# -- the core ---------------------------------------------------------------------------------


def serving_hooks() -> PrometheusHooks | None:
    """The core's hooks when gunicorn runs them in this process and is loading the app now.

    That is plain ``gunicorn -c python:gunicorn_prom_ext.gunicorn_conf`` (or a config
    file calling ``install_hooks``): in a worker, or in a --preload master. None under
    ``flask run-gunicorn`` (it loads the app before gunicorn starts and passes the hooks
    itself), Flask's test client or another server. Never imports the module itself.
    """
    conf = sys.modules.get("gunicorn_prom_ext.gunicorn_conf")
    hooks = getattr(conf, "hooks", None)
    if isinstance(hooks, PrometheusHooks) and hooks.role is not None:
        return hooks
    return None


def _describe_fn(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{name}" if module else name
