"""Run a framework's WSGI app under gunicorn with the project's hooks.

Both framework commands (``manage.py rungunicorn``, ``flask run-gunicorn``) stand on
this. It does what a plain ``gunicorn -c …`` cannot:

* the multiprocess directory is exported *before* the framework imports anything, and
  if something already imported prometheus_client in single-process mode (a Django
  app, a Flask app at import), the command re-executes itself with the directory in
  its environment instead of serving empty metrics;
* gunicorn's command line is parsed from an explicit argument list, with gunicorn's own
  precedence: framework defaults < config file < GUNICORN_CMD_ARGS < command line;
* hooks of a ``-c`` config file keep running, chained after ours;
* a USR2 re-exec replays the command as it was started (``python -m flask`` included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from gunicorn.app.base import Application
from gunicorn.config import get_default_config_file

from gunicorn_prom_ext.chaining import HOOK_ARITY, Hook, chain
from gunicorn_prom_ext.hooks import PrometheusHooks
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.storage.directory import (
    MULTIPROC_DIR_ENV,
    PRIVATE_DIR_ENV,
    make_private_directory,
)
from gunicorn_prom_ext.storage.directory import prometheus_client_single_process as _single

# Set in the environment of a command that re-executed itself, so it does not loop.
REEXECUTED_ENV = "GUNICORN_PROM_EXT_REEXECUTED"


def restart_command() -> list[str]:
    """The command line that starts this process again (for USR2 and our own re-exec).

    gunicorn replays ``[sys.executable] + sys.argv``, which for ``python -m pkg`` runs
    pkg/__main__.py as a plain script and breaks its imports.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        module = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", module, *sys.argv[1:]]
    return [sys.executable, *sys.argv]


def export_multiproc_dir(
    settings: Settings, environ: MutableMapping[str, str] | None = None
) -> None:
    """Make sure prometheus_client will find its directory, re-executing if it is too late.

    Call this before loading the project's app. Without a configured directory a private
    one is made here; the master's hooks adopt it and remove it when the server exits.
    """
    env = os.environ if environ is None else environ
    handed_over = env.get(PRIVATE_DIR_ENV) if "GUNICORN_PID" in env else None
    if handed_over and not env.get(MULTIPROC_DIR_ENV):
        # A USR2 master: the old one handed its private directory over (hooks.pre_exec).
        env[MULTIPROC_DIR_ENV] = handed_over
    if not env.get(MULTIPROC_DIR_ENV):
        path = settings.multiproc_dir or make_private_directory()
        env[MULTIPROC_DIR_ENV] = os.path.abspath(path)
        if not settings.multiproc_dir:
            env[PRIVATE_DIR_ENV] = env[MULTIPROC_DIR_ENV]
    if _single() and not env.get(REEXECUTED_ENV):
        env[REEXECUTED_ENV] = "1"
        command = restart_command()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(command[0], command, dict(env))


@contextlib.contextmanager
def private_dir_removed_unless_adopted() -> Iterator[None]:
    """Wrap a framework command from before export_multiproc_dir to the end of gunicorn's
    run: if the command stops before the master's hooks adopted the private directory it
    made (a bad app config value, a bad gunicorn option, a ConfigError from the master's
    first hook), the directory is removed. Once adopted (prepare_directory pops
    PRIVATE_DIR_ENV) the hooks own it, USR2 hand-over included, and nothing is done here.

    Forked workers leave gunicorn's run() through this too: only the process that entered
    removes anything. A master started by USR2 (GUNICORN_PID set) never does: the old
    master still uses the directory it was handed.
    """
    pid = os.getpid()
    try:
        yield
    finally:
        path = os.environ.get(PRIVATE_DIR_ENV)
        if (
            path
            and os.getpid() == pid
            and "GUNICORN_PID" not in os.environ
            and os.environ.get(MULTIPROC_DIR_ENV) == path
        ):
            shutil.rmtree(path, ignore_errors=True)
            del os.environ[PRIVATE_DIR_ENV]


class GunicornLauncher(Application):  # type: ignore[misc]
    """A gunicorn Application for a framework's app, configured from explicit arguments."""

    def __init__(
        self,
        load_app: Callable[[], Any],
        argv: Sequence[str],
        *,
        hooks: PrometheusHooks,
        defaults: Mapping[str, Any] | None = None,
        extra_hooks: Mapping[str, Sequence[Hook]] | None = None,
        prog: str | None = None,
    ) -> None:
        self._load_app = load_app
        self._argv = list(argv)
        self._hooks = hooks
        self._defaults = dict(defaults or {})
        self._extra_hooks = {name: list(fns) for name, fns in (extra_hooks or {}).items()}
        self._restart = restart_command()
        super().__init__(usage=None, prog=prog)

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        return None

    def load(self) -> Any:
        return self._load_app()

    def load_config(self) -> None:
        # gunicorn's Application.load_config, reading self._argv instead of sys.argv.
        parser = self.cfg.parser()
        args = parser.parse_args(self._argv)
        for key, value in self._defaults.items():
            self.cfg.set(key, value)
        env_args = parser.parse_args(self.cfg.get_cmd_args_from_env())
        config_file = args.config or env_args.config or get_default_config_file()
        if config_file:
            self.load_config_from_file(config_file)
        for layer in (env_args, args):
            for key, value in vars(layer).items():
                if value is not None and key != "args":
                    self.cfg.set(key.lower(), value)
        self.chdir()
        self._install_hooks()

    def _install_hooks(self) -> None:
        for name in HOOK_ARITY:
            setting = self.cfg.settings[name]
            theirs: list[Hook] = []
            # A hook from the config file (or GUNICORN_CMD_ARGS) replaced the default.
            if setting.get() is not setting.default:
                theirs.append(setting.get())
            theirs.extend(self._extra_hooks.get(name, ()))
            if name == "on_starting":
                theirs.insert(0, self._fix_restart_command)
            ours: Hook = getattr(self._hooks, name)
            for hook in theirs:
                ours = chain(name, ours, hook)
            self.cfg.set(name, ours)

    def _fix_restart_command(self, arbiter: Any) -> None:
        arbiter.START_CTX["args"] = self._restart
