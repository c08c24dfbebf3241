"""``gunicorn-prom-ext dashboard`` and ``gunicorn-prom-ext rules``.

Both read the settings the way ``check-config`` does (YAML file, environment), so the
printed queries use the namespace the server will use; ``--namespace`` overrides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from ..settings import ConfigError, Settings, format_number
from ..sources import CONFIG_FILE_ENV, load_settings
from .render import RUNBOOK_BASE, SLO_LATENCY_SECONDS, dashboard_text, rules_text

# argparse's return type for add_subparsers() is private; Any keeps cli.py's call simple.
Subparsers = Any


def add_dashboard_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="print the Grafana dashboard (JSON) with the configured namespace",
        description="Print the Grafana dashboard shipped with the package, its queries "
        "using the configured namespace. Import it in Grafana (Dashboards > New > Import) "
        "and pick a Prometheus data source.",
    )
    _add_settings_arguments(parser)
    parser.set_defaults(handler=print_dashboard)


def add_rules_parser(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "rules",
        help="print the Prometheus recording and alerting rules with the configured namespace",
        description="Print the Prometheus rules shipped with the package (recording rules and "
        "alerts), their queries using the configured namespace. Save them to a file listed "
        "under rule_files in prometheus.yml.",
    )
    _add_settings_arguments(parser)
    parser.add_argument(
        "--runbook-base",
        metavar="URL",
        help=f"where docs/runbooks.md is published; each alert's runbook_url is URL#<alert> "
        f"(default: {RUNBOOK_BASE})",
    )
    parser.set_defaults(handler=print_rules)


def print_dashboard(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 1
    _warn_without_slo_bucket(settings)
    return _write(dashboard_text(settings.namespace))


def print_rules(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 1
    _warn_without_slo_bucket(settings)
    return _write(rules_text(settings.namespace, args.runbook_base))


def _write(text: str) -> int:
    """Print; a reader that went away (``| head``) ends the command quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help=f"YAML configuration file (default: ${CONFIG_FILE_ENV})"
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help="metric name prefix, overriding the configuration ('' for none)",
    )


def _settings(args: argparse.Namespace) -> Settings | None:
    command_line = {"namespace": args.namespace}
    try:
        settings = load_settings(config_file=args.config, command_line=command_line).settings
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    if args.namespace == "":  # an empty value counts as "not given" in load_settings
        settings = dataclasses.replace(settings, namespace="")
    return settings


def _warn_without_slo_bucket(settings: Settings) -> None:
    if SLO_LATENCY_SECONDS not in settings.duration_buckets:
        buckets = ", ".join(format_number(b) for b in settings.duration_buckets)
        print(
            f"warning: the latency objective counts requests under {SLO_LATENCY_SECONDS} s "
            f'(le="{SLO_LATENCY_SECONDS}"), which is not one of the configured duration '
            f"buckets ({buckets}): the latency burn-rate rules and the panel 'Requests over "
            f"the latency objective' will have no data. Add {SLO_LATENCY_SECONDS} to "
            "exporter.prometheus.duration_buckets (PROMETHEUS_DURATION_BUCKETS).",
            file=sys.stderr,
        )
