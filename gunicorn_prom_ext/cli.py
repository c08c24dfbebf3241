"""``gunicorn-prom-ext``: command-line tools around the configuration, and the Redis sidecar."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable

from .kit.commands import add_dashboard_parser, add_rules_parser
from .settings import SETTINGS, ConfigError, format_value
from .sources import CONFIG_FILE_ENV, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gunicorn-prom-ext", description="Prometheus metrics for apps served by Gunicorn."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print every effective setting",
        description="Load the configuration the way the server would (file, environment) "
        "and print every setting with its value and where it came from.",
    )
    check.add_argument(
        "file", nargs="?", metavar="FILE", help=f"YAML file (default: ${CONFIG_FILE_ENV})"
    )
    check.add_argument(
        "-b", "--bind", action="append", metavar="ADDRESS",
        help="an address gunicorn will bind, as its --bind takes it (repeatable): the metrics "
        "port must not be one of its ports. Default: what gunicorn itself would bind, from "
        "GUNICORN_CMD_ARGS, else $PORT, else 127.0.0.1:8000",
    )  # fmt: skip
    check.set_defaults(handler=check_config)
    serve = commands.add_parser(
        "serve",
        help="serve the metrics every instance pushed to Redis (a sidecar)",
        description="Serve /metrics from Redis: every instance listed under the key prefix, "
        "each series labelled gunicorn_instance. Settings come from the environment and "
        f"${CONFIG_FILE_ENV} as for the server (metrics port, bind address, auth, TLS, Redis); "
        "these options override them.",
    )
    serve.add_argument("--bind", metavar="ADDR", help="address to listen on")
    serve.add_argument("--port", metavar="N", help="port to listen on")
    prefixes = serve.add_mutually_exclusive_group()
    prefixes.add_argument("--key-prefix", metavar="P", help="the service to serve")
    prefixes.add_argument(
        "--all-prefixes",
        action="store_true",
        help="every service found in Redis, each series labelled gunicorn_service too",
    )
    serve.set_defaults(handler=serve_from_redis)
    add_dashboard_parser(commands)
    add_rules_parser(commands)
    return parser


def check_config(args: argparse.Namespace) -> int:
    """Load the settings exactly as the master's first hook does (same checks, gunicorn's
    binds included) and, with REDIS_ENABLED, make the same start-up PING."""
    try:
        binds = args.bind or gunicorn_default_binds()
        addresses = [parse_gunicorn_bind(bind) for bind in binds]
    except ValueError as exc:
        given = "--bind" if args.bind else "gunicorn's bind ($PORT or GUNICORN_CMD_ARGS)"
        print(f"gunicorn-prom-ext check-config: {given}: {exc}", file=sys.stderr)
        return 2
    try:
        resolved = load_settings(config_file=args.file, gunicorn_addresses=addresses)
        if resolved.settings.redis_enabled:
            from .storage.redis import check_credentials

            check_credentials(resolved.settings, resolved.sources)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    config_file = args.file or os.environ.get(CONFIG_FILE_ENV)
    shown_file = _printable(os.path.abspath(config_file)) if config_file else "(none)"
    print(f"configuration file: {shown_file}")
    print(f"gunicorn binds: {' '.join(_printable(bind) for bind in binds)}")
    rows = [("KEY", "VALUE", "SOURCE")]
    for spec in SETTINGS:
        value = getattr(resolved.settings, spec.field)
        shown = "***" if spec.secret and value is not None else _printable(format_value(value))
        rows.append((spec.key, shown, _printable(resolved.sources[spec.field])))
    key_width = max(len(row[0]) for row in rows)
    # Buckets are long; capping keeps the source column aligned for everything else.
    value_width = min(max(len(row[1]) for row in rows), 32)
    for key, value, source in rows:
        print(f"{key:<{key_width}}  {value:<{value_width}}  {source}")
    return 0


def gunicorn_default_binds() -> list[str]:
    """What gunicorn binds without a config file: GUNICORN_CMD_ARGS's --bind, else its
    default (0.0.0.0:$PORT when PORT is set, else 127.0.0.1:8000)."""
    from gunicorn.config import Config

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-b", "--bind", action="append")
    try:
        words = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
        given, _ = parser.parse_known_args(words)
    except (ValueError, SystemExit):  # unbalanced quotes, -b without a value
        given = argparse.Namespace(bind=None)
    if given.bind:
        return list(given.bind)
    default: list[str] = Config().bind  # gunicorn reads $PORT (when gunicorn is imported)
    return list(default)


def parse_gunicorn_bind(bind: str) -> object:
    """One entry of gunicorn's cfg.address, parsed as gunicorn parses it."""
    from gunicorn.util import parse_address

    try:
        return parse_address(bind)
    except RuntimeError as exc:  # gunicorn's way of saying "not a port"
        raise ValueError(str(exc)) from None


def _printable(text: str) -> str:
    """Text as the terminal can show it: a path's undecodable bytes as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def serve_from_redis(args: argparse.Namespace) -> int:
    import importlib.util
    import signal
    import threading

    command_line = {"bind_address": args.bind, "metrics_port": args.port,
                    "redis_key_prefix": args.key_prefix}  # fmt: skip
    try:
        resolved = load_settings(command_line=command_line)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if importlib.util.find_spec("redis") is None:
        print("gunicorn-prom-ext serve needs redis-py: pip install 'gunicorn-prom-ext[redis]'",
              file=sys.stderr)  # fmt: skip
        return 1
    from prometheus_client.registry import CollectorRegistry

    from .endpoint import MetricsEndpoint
    from .sidecar import RedisCollector
    from .storage.redis import check_credentials

    settings = resolved.settings
    try:
        check_credentials(settings, resolved.sources)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    log = _stderr_logger("gunicorn_prom_ext.serve")
    collector = RedisCollector(settings, log, all_prefixes=args.all_prefixes)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    endpoint = MetricsEndpoint(settings, registry, log)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    endpoint.start()
    if endpoint.url is None:  # a sidecar that cannot listen should fail, not linger
        endpoint.stop()
        log.error("exiting: the metrics port is not available")
        return 1
    scope = "every key prefix" if args.all_prefixes else f"key prefix {settings.redis_key_prefix!r}"
    log.info("serving instances of %s from %s", scope, collector.target)
    stopping.wait()
    endpoint.stop()
    collector.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


def _stderr_logger(name: str) -> logging.Logger:
    """A logger of the command's own (the root logger is left alone)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] %(message)s")
    )
    log = logging.getLogger(name)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


if __name__ == "__main__":
    raise SystemExit(main())

