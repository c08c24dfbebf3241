"""``python manage.py rungunicorn [addrport] [any gunicorn option]``.

Serves the project's WSGI_APPLICATION (its ASGI application under uvicorn's or gunicorn's
asgi worker class) under gunicorn with the project's hooks and the metrics endpoint in the
master. Every gunicorn command-line option passes through
(``-w 4 -k gthread --threads 8 --timeout 60 -c gunicorn.conf.py …``); precedence is
gunicorn's own: GUNICORN_PROMETHEUS's GUNICORN_WORKERS/TIMEOUT/KEEPALIVE < config file <
GUNICORN_CMD_ARGS < command line. Like ``runserver``, system checks run first.

The command line is split by hand, not by Django's argparse parser (which would reject
gunicorn's options): Django's own long options (``--settings``, ``--pythonpath``,
``--verbosity``, ``--traceback``, ``--no-color``, ``--force-color``, ``--skip-checks``)
are taken here, everything else goes to gunicorn, and gunicorn's parser finds the
optional positional address. ``-v`` is gunicorn's ``--version``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_app import conf
from django_app.hooks import DjangoPrometheusHooks
from gunicorn_prom_ext.launcher import (
    REEXECUTED_ENV,
    GunicornLauncher,
    export_multiproc_dir,
    private_dir_removed_unless_adopted,
)
from gunicorn_prom_ext.settings import ConfigError, Settings
from gunicorn_prom_ext.storage.directory import prometheus_client_single_process
from gunicorn_prom_ext.worker_classes import serves_asgi

# Django's options, long forms only: gunicorn owns every short option (-v is --version).
_DJANGO_VALUED = {
    "--settings": "settings",
    "--pythonpath": "pythonpath",
    "--verbosity": "verbosity",
}
_DJANGO_FLAGS = {
    "--traceback": "traceback",
    "--no-color": "no_color",
    "--force-color": "force_color",
    "--skip-checks": "skip_checks",
}
# Config modules that install the hooks a second time: rungunicorn already has them.
_CONFIG_MODULES = ("django_app.gunicorn_conf", "gunicorn_prom_ext.gunicorn_conf")
_OUR_CONFIG_MODULES = tuple(f"python:{module}" for module in _CONFIG_MODULES)


def split_arguments(argv: Sequence[str]) -> tuple[dict[str, Any], list[str], bool]:
    """(Django options, gunicorn arguments, help asked) from the words after the name."""
    django: dict[str, Any] = {}
    gunicorn: list[str] = []
    wants_help = False
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        if word == "--":
            gunicorn.extend(words[i:])
            break
        if word in ("-h", "--help"):
            wants_help = True
        elif name in _DJANGO_VALUED:
            if eq:
                value = inline
            elif i + 1 < len(words):
                i += 1
                value = words[i]
            else:
                raise CommandError(f"{name} needs a value")
            django[_DJANGO_VALUED[name]] = value
        elif word in _DJANGO_FLAGS:
            django[_DJANGO_FLAGS[word]] = True
        else:
            gunicorn.append(word)
        i += 1
    if "verbosity" in django:
        try:
            django["verbosity"] = int(django["verbosity"])
        except ValueError:
            raise CommandError(f"--verbosity: not a number: {django['verbosity']!r}") from None
    return django, gunicorn, wants_help


HELP = """\
usage: {prog} [addr:port] [gunicorn options] [Django options]

{help}

Django options (long forms only):
  --settings SETTINGS    settings module (else DJANGO_SETTINGS_MODULE)
  --pythonpath PATH      a directory to add to the Python path
  --verbosity N          0 to 3
  --skip-checks          do not run the system checks first
  --traceback, --no-color, --force-color

addr:port as for runserver: 8000, 0:8000, 127.0.0.1:8000, [::1]:8000 (gunicorn's --bind).
Everything else is gunicorn's, short options included (-v is gunicorn's --version):
"""


def bind_address(addrport: str) -> str:
    """runserver's forms (``8000``, ``0:8000``, ``[::1]:8000``) as a gunicorn bind."""
    if addrport.isdigit():
        return f"127.0.0.1:{addrport}"
    if addrport.startswith("0:"):
        return f"0.0.0.0:{addrport[2:]}"
    return addrport


def metrics_url(settings: Settings) -> str:
    scheme = "https" if settings.ssl_enabled else "http"
    host = settings.bind_address or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.metrics_port}/metrics"


def gunicorn_parser(prog: str) -> argparse.ArgumentParser:
    from gunicorn.config import Config

    parser: argparse.ArgumentParser = Config(prog=prog).parser()
    return parser


class Command(BaseCommand):  # type: ignore[misc]  # Django is untyped
    help = (
        "Serve the project under gunicorn with Prometheus metrics (gunicorn-prom-ext). "
        "Takes an optional [addr:]port and any gunicorn option."
    )
    # Checks run in handle(), like runserver, so a re-executed command skips them.
    requires_system_checks: list[str] = []  # noqa: RUF012  (Django's attribute)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "addrport", nargs="?", help="Optional [addr:]port to bind (gunicorn's --bind)."
        )
        parser.add_argument(
            "gunicorn_args",
            nargs=argparse.REMAINDER,
            help="Any gunicorn option, e.g. -w 4 --timeout 60 -c gunicorn.conf.py "
            "(see gunicorn --help).",
        )
        parser.add_argument(
            "--skip-checks", action="store_true", help="Skip the system checks."
        )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        """Django's parser, with parse_args replaced by split_arguments: used alike by
        ``manage.py rungunicorn …`` (run_from_argv) and ``call_command``."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        prog = f"{os.path.basename(prog_name) or 'manage.py'} {subcommand}"
        parse_defaults = parser.parse_args

        def parse_args(args: Sequence[str] | None = None, namespace: Any = None) -> Any:
            try:
                django_options, gunicorn_args, wants_help = split_arguments(list(args or ()))
            except CommandError as exc:
                parser.error(str(exc))  # usage and exit 2 from the command line
            if wants_help:
                print(HELP.format(prog=prog, help=self.help))
                print(gunicorn_parser(prog).format_help())
                sys.exit(0)
            options = parse_defaults([], namespace)
            for name, value in django_options.items():
                setattr(options, name, value)
            options.gunicorn_args = gunicorn_args
            options.prog = prog
            return options

        parser.parse_args = parse_args
        return parser

    def handle(self, *args: Any, **options: Any) -> None:
        prog = options.get("prog") or "manage.py rungunicorn"
        argv = list(options.get("gunicorn_args") or [])
        # gunicorn's parser knows which options take a value, so it alone can tell the
        # positional address apart (e.g. in `-w 4 0:8000`). Bad options exit here, with
        # gunicorn's usage message, before anything starts.
        parsed = gunicorn_parser(prog).parse_args(argv)
        addresses = [a for a in [options.get("addrport"), *parsed.args] if a]
        if len(addresses) > 1:
            raise CommandError(f"one [addr:]port at most, got {', '.join(addresses)}")
        if addresses:
            argv += ["--bind", bind_address(addresses[0])]
        if parsed.config in _OUR_CONFIG_MODULES:
            raise CommandError(
                f"-c {parsed.config} installs the hooks a second time; rungunicorn has "
                "them already (drop the option; your own config file's hooks are fine)"
            )

        # The first run of this command did the checks; our own re-exec (to get
        # prometheus_client into multiprocess mode) does not repeat them. A USR2
        # re-exec (GUNICORN_PID set) does: it may be running new code.
        reexecuted = bool(os.environ.get(REEXECUTED_ENV)) and "GUNICORN_PID" not in os.environ
        if not reexecuted:
            if not options.get("skip_checks"):
                self.stdout.write("Performing system checks...\n\n")
                self.check(display_num_errors=True)
            self.check_migrations()
        from django.db import connections

        connections.close_all()  # never fork with an open database connection

        try:
            settings = conf.resolve_settings().settings
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        # Whatever stops the command from here on (a bad gunicorn option or config file,
        # a ConfigError in the master's first hook) must not leave the private metrics
        # directory behind.
        with private_dir_removed_unless_adopted():
            self._serve(settings, argv, prog)

    def _serve(self, settings: Settings, argv: list[str], prog: str) -> None:
        # Before gunicorn (or anything else) loads the app; re-executes this command if
        # the settings or an installed app already imported prometheus_client.
        if prometheus_client_single_process() and not os.environ.get(REEXECUTED_ENV):
            self.stdout.write(
                "prometheus_client was imported before the metrics directory was set (by "
                "the settings or an installed app); restarting in multiprocess mode."
            )
        export_multiproc_dir(settings)

        defaults: dict[str, Any] = {}
        for setting, value in (
            ("workers", settings.gunicorn_workers),
            ("timeout", settings.gunicorn_timeout),
            ("keepalive", settings.gunicorn_keepalive),
        ):
            if value is not None:
                defaults[setting] = value
        hooks = DjangoPrometheusHooks(gunicorn_settings_applied=True)

        def announce(arbiter: Any) -> None:
            self._announce(arbiter, hooks)

        def load() -> Any:  # in each worker, with the configuration it runs with
            return load_app(launcher.cfg)

        launcher = GunicornLauncher(
            load,
            argv,
            hooks=hooks,
            defaults=defaults,
            extra_hooks={"when_ready": [announce]},
            prog=prog,
        )
        # A config file (given with -c, or ./gunicorn.conf.py) that calls install_hooks
        # imported one of these: its hooks would record every request a second time.
        for module in _CONFIG_MODULES:
            if module in sys.modules:
                raise CommandError(
                    f"the gunicorn config file imported {module} (install_hooks?): "
                    "rungunicorn installs the hooks itself; remove that from the file or "
                    "use plain gunicorn with it"
                )
        launcher.run()

    def _announce(self, arbiter: Any, hooks: DjangoPrometheusHooks) -> None:
        import django
        import gunicorn
        from django.conf import settings as django_settings

        lines = [
            f"Django version {django.get_version()}, using settings "
            f"{django_settings.SETTINGS_MODULE!r}",
            f"Starting gunicorn {gunicorn.__version__}: {arbiter.num_workers} "
            f"{arbiter.cfg.worker_class_str} worker(s)",
        ]
        for listener in arbiter.LISTENERS:
            url = str(listener)
            lines.append(f"App:     {url}/" if url.startswith("http") else f"App:     {url}")
        if hooks.settings is not None:
            lines.append(f"Metrics: {metrics_url(hooks.settings)}")
        lines.append("Quit the server with CONTROL-C.")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()


def load_app(cfg: Any) -> Any:
    """The project's WSGI_APPLICATION, as runserver loads it (in each worker).

    Under a worker class that serves ASGI apps (uvicorn's, gunicorn's asgi) the project's
    ASGI application instead: ASGI_APPLICATION when the settings name one (as Daphne and
    Channels read it), else Django's own, as a project's asgi.py makes it."""
    if serves_asgi(cfg):
        from django.conf import settings

        name = getattr(settings, "ASGI_APPLICATION", None)
        if name:
            from django.utils.module_loading import import_string

            return import_string(name)
        from django.core.asgi import get_asgi_application

        return get_asgi_application()
    from django.core.servers.basehttp import get_internal_wsgi_application

    return get_internal_wsgi_application()
