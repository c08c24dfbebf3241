"""``flask run-gunicorn``: serve the app found by ``--app``/FLASK_APP under gunicorn.

Registered as a ``flask.commands`` entry point, so it exists for every Flask app once the
package is installed. Flask imports this module for every ``flask`` command: it must stay
cheap and must never import prometheus_client (docs/design-notes.md).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click
from flask.cli import ScriptInfo

if TYPE_CHECKING:
    from gunicorn_prom_ext.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000  # as `flask run`
# Set when the command re-executed itself to adopt app.config's multiprocess directory.
_DIR_REEXEC_ENV = "GUNICORN_PROM_EXT_FLASK_DIR"


@click.command(
    "run-gunicorn",
    context_settings={"ignore_unknown_options": True},
    short_help="Serve the app with gunicorn and Prometheus metrics.",
)
@click.option(
    "--host", "-h", default=None, help=f"The interface to bind to (default {DEFAULT_HOST})."
)
@click.option(
    "--port", "-p", type=int, default=None, help=f"The port to bind to (default {DEFAULT_PORT})."
)
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_gunicorn(
    ctx: click.Context, host: str | None, port: int | None, gunicorn_args: tuple[str, ...]
) -> None:
    """Serve the app with gunicorn, with the gunicorn-prom-ext hooks and metrics endpoint.

    Every other option is gunicorn's, e.g. -w 4 -k gthread --threads 2 --timeout 60
    -c gunicorn.conf.py (its hooks still run). gunicorn's own -p is spelled --pid here.
    Precedence: defaults < -c file < GUNICORN_CMD_ARGS < this command line.
    """
    run(ctx.ensure_object(ScriptInfo), host, port, gunicorn_args)


def run(
    info: ScriptInfo, host: str | None, port: int | None, gunicorn_args: Sequence[str]
) -> None:
    from gunicorn_prom_ext.launcher import private_dir_removed_unless_adopted
    from gunicorn_prom_ext.settings import ConfigError
    from gunicorn_prom_ext.sources import load_settings

    argv = list(gunicorn_args)
    defaults: dict[str, object] = {"bind": [_address(DEFAULT_HOST, DEFAULT_PORT)]}
    if host is not None or port is not None:
        if _has_bind(argv):
            raise click.UsageError("give the address either as -h/-p or as gunicorn's -b/--bind")
        argv = ["--bind", _address(host or DEFAULT_HOST, port or DEFAULT_PORT), *argv]

    try:
        settings = load_settings().settings
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    # Whatever stops the command from here on (a bad app.config value, a bad gunicorn
    # option, a ConfigError in the master's first hook) must not leave the private
    # metrics directory behind.
    with private_dir_removed_unless_adopted():
        _serve(info, settings, argv, defaults)


def _serve(
    info: ScriptInfo, settings: Settings, argv: list[str], defaults: dict[str, object]
) -> None:
    from flask_ext.extension import CONFIG_SOURCE, EXTENSION_KEY, FlaskState, PrometheusGunicorn
    from gunicorn_prom_ext.hooks import PrometheusHooks
    from gunicorn_prom_ext.launcher import GunicornLauncher, export_multiproc_dir
    from gunicorn_prom_ext.settings import ConfigError
    from gunicorn_prom_ext.worker_classes import serves_asgi

    # Before the app is imported: it may import prometheus_client.
    export_multiproc_dir(settings)
    try:
        app = info.load_app()  # an app factory calling init_app validates app.config
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, FlaskState):
        # An app without the extension still gets the hooks, and route labels from here.
        try:
            PrometheusGunicorn(app)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        state = app.extensions[EXTENSION_KEY]
        assert isinstance(state, FlaskState)
    _adopt_app_config_directory(state.settings.multiproc_dir)
    # The `gunicorn` settings (GUNICORN_PROMETHEUS_GUNICORN_WORKERS, GUNICORN_WORKERS, …)
    # are defaults here: a -c file, GUNICORN_CMD_ARGS and the command line beat them.
    for setting, value in (("workers", state.settings.gunicorn_workers),
                           ("timeout", state.settings.gunicorn_timeout),
                           ("keepalive", state.settings.gunicorn_keepalive)):  # fmt: skip
        if value is not None:
            defaults[setting] = value

    launcher = GunicornLauncher(
        lambda: app,
        argv,
        hooks=PrometheusHooks(
            framework=state.framework,
            framework_source=CONFIG_SOURCE,
            gunicorn_settings_applied=True,
        ),
        defaults=defaults,
        extra_hooks=state.extension.gunicorn_hooks(app),
        prog="flask run-gunicorn",
    )
    if serves_asgi(launcher.cfg):  # it would answer 500 to every request
        raise click.ClickException(
            f"worker class {launcher.cfg.worker_class_str} serves ASGI apps, and a Flask "
            "app is a WSGI app: use a WSGI worker class (sync, gthread, gevent, …)"
        )
    launcher.run()


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"{host}:{port}"


def _has_bind(argv: Sequence[str]) -> bool:
    return any(
        arg in ("-b", "--bind") or arg.startswith("--bind=")
        or (arg.startswith("-b") and not arg.startswith("--"))
        for arg in argv
    )  # fmt: skip


def _adopt_app_config_directory(configured: str | None) -> None:
    """GUNICORN_PROMETHEUS_MULTIPROC_DIR in app.config names another directory than the
    one exported before the app was imported: switch to it, re-executing the command if
    prometheus_client has already opened files in the other one."""
    from gunicorn_prom_ext.launcher import restart_command
    from gunicorn_prom_ext.storage.directory import MULTIPROC_DIR_ENV, PRIVATE_DIR_ENV

    if not configured:
        return
    path = os.path.abspath(configured)
    current = os.environ.get(MULTIPROC_DIR_ENV)
    if current and os.path.abspath(current) == path:
        return
    private = os.environ.pop(PRIVATE_DIR_ENV, None)
    if private and current and os.path.abspath(private) == os.path.abspath(current):
        shutil.rmtree(private, ignore_errors=True)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"GUNICORN_PROMETHEUS_MULTIPROC_DIR (app.config): cannot create {path}: "
            f"{exc.strerror}"
        ) from None
    os.environ[MULTIPROC_DIR_ENV] = path
    if "prometheus_client" in sys.modules and not os.environ.get(_DIR_REEXEC_ENV):
        os.environ[_DIR_REEXEC_ENV] = "1"
        command = restart_command()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(command[0], command)
