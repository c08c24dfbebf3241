"""``gunicorn-prom-ext``: command-line tools around the configuration."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

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
    check.set_defaults(handler=check_config)
    return parser


def check_config(args: argparse.Namespace) -> int:
    try:
        resolved = load_settings(config_file=args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    config_file = args.file or os.environ.get(CONFIG_FILE_ENV)
    print(f"configuration file: {os.path.abspath(config_file) if config_file else '(none)'}")
    rows = [("KEY", "VALUE", "SOURCE")]
    for spec in SETTINGS:
        value = getattr(resolved.settings, spec.field)
        shown = "***" if spec.secret and value is not None else format_value(value)
        rows.append((spec.key, shown, resolved.sources[spec.field]))
    key_width = max(len(row[0]) for row in rows)
    # Buckets are long; capping keeps the source column aligned for everything else.
    value_width = min(max(len(row[1]) for row in rows), 32)
    for key, value, source in rows:
        print(f"{key:<{key_width}}  {value:<{value_width}}  {source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
