"""Applying a namespace renames metric names and nothing else, and the dashboard and rules
commands read it the way check-config reads settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO_ROOT

from gunicorn_prom_ext.kit.names import exposed_names, name_map, recording_rule_name
from gunicorn_prom_ext.kit.promql import PromQLSyntaxError, rename_metrics
from gunicorn_prom_ext.kit.render import (
    iter_panels,
    namespace_dashboard,
    namespaced_uid,
    read_packaged,
    rules_text,
)

NAMES = name_map("ns", ["job:http_server_slow_requests:ratio_rate5m"])


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # Metric names, with their suffixes, anywhere an expression can hold one.
        ("gunicorn_workers", "ns_gunicorn_workers"),
        ("gunicorn_workers < gunicorn_workers_desired",
         "ns_gunicorn_workers < ns_gunicorn_workers_desired"),
        ("rate(http_server_request_duration_seconds_bucket[5m])",
         "rate(ns_http_server_request_duration_seconds_bucket[5m])"),
        ("-gunicorn_workers*2", "-ns_gunicorn_workers*2"),
        ("gunicorn_workers offset 5m @ start()", "ns_gunicorn_workers offset 5m @ start()"),
        ("max_over_time(gunicorn_workers[10m:1m])", "max_over_time(ns_gunicorn_workers[10m:1m])"),
        ('{__name__="gunicorn_workers"}', '{__name__="ns_gunicorn_workers"}'),
        ("{__name__!='gunicorn_workers', job='x'}", "{__name__!='ns_gunicorn_workers', job='x'}"),
        ("job:http_server_slow_requests:ratio_rate5m > 0.1",
         "job:ns_http_server_slow_requests:ratio_rate5m > 0.1"),
        # Label names are not metric names, even when spelled like one.
        ("sum by (gunicorn_workers, le) (gunicorn_workers)",
         "sum by (gunicorn_workers, le) (ns_gunicorn_workers)"),
        ("sum(gunicorn_workers) without (gunicorn_info)",
         "sum(ns_gunicorn_workers) without (gunicorn_info)"),
        ("a * on (gunicorn_info) group_left (gunicorn_workers) gunicorn_info",
         "a * on (gunicorn_info) group_left (gunicorn_workers) ns_gunicorn_info"),
        ("a / ignoring(gunicorn_workers) b", "a / ignoring(gunicorn_workers) b"),
        ('gunicorn_workers{gunicorn_workers="gunicorn_workers"}',
         'ns_gunicorn_workers{gunicorn_workers="gunicorn_workers"}'),
        # Strings, regular expressions, comments, variables and longer names stay.
        ('up{job=~"gunicorn_workers|gunicorn_info"}',
         'up{job=~"gunicorn_workers|gunicorn_info"}'),
        ('label_replace(up, "gunicorn_workers", "$1", "job", "(.*)")',
         'label_replace(up, "gunicorn_workers", "$1", "job", "(.*)")'),
        ("up # gunicorn_workers is down", "up # gunicorn_workers is down"),
        ("rate(gunicorn_reloads_total[$__rate_interval]) + $gunicorn_workers + ${gunicorn_info}",
         "rate(ns_gunicorn_reloads_total[$__rate_interval]) + $gunicorn_workers "
         "+ ${gunicorn_info}"),
        ("gunicorn_workers_total + my_gunicorn_workers + gunicorn_workersX",
         "gunicorn_workers_total + my_gunicorn_workers + gunicorn_workersX"),
        ("x:gunicorn_workers:y + gunicorn_workers:rate5m",
         "x:gunicorn_workers:y + gunicorn_workers:rate5m"),
        # A function or keyword named like nothing we know; a name followed by "(" is a call.
        ("sum(gunicorn_info) and bool gunicorn_info",
         "sum(ns_gunicorn_info) and bool ns_gunicorn_info"),
        # Grafana's label_values: the label argument is no metric.
        ('label_values(gunicorn_info{job=~"$job"}, instance)',
         'label_values(ns_gunicorn_info{job=~"$job"}, instance)'),
        ("label_values(gunicorn_info, gunicorn_workers)",
         "label_values(ns_gunicorn_info, gunicorn_workers)"),
        ("label_values(gunicorn_workers)", "label_values(gunicorn_workers)"),
        # Spacing and line breaks are kept as written.
        ("sum by (le) (\n  rate(gunicorn_workers[1m])\n)\n/\n  gunicorn_info",
         "sum by (le) (\n  rate(ns_gunicorn_workers[1m])\n)\n/\n  ns_gunicorn_info"),
    ],
)  # fmt: skip
def test_rename_is_exact(before: str, after: str) -> None:
    assert rename_metrics(before, NAMES) == after


@pytest.mark.parametrize("broken", ['up{job="x', "sum(up", "up)", "up ~ 1", "rate(up[5m)"])
def test_unreadable_promql_is_an_error_not_a_guess(broken: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        rename_metrics(broken, NAMES)


def test_every_exposed_name_and_no_other() -> None:
    names = exposed_names()
    assert "http_server_request_duration_seconds_bucket" in names
    assert "gunicorn_worker_exits_total" in names
    assert "gunicorn_worker_exits" not in names  # a counter's family name is never queried
    assert "up" not in names and "scrape_duration_seconds" not in names
    assert recording_rule_name("a:b:c", "x") == "a:x_b:c"
    assert recording_rule_name("odd_name", "x") == "x_odd_name"
    assert name_map("") == {name: name for name in exposed_names()}


def test_namespaced_dashboard_changes_queries_uid_and_title_only() -> None:
    original: dict[str, Any] = json.loads(read_packaged("dashboard.json"))
    renamed = namespace_dashboard(original, "gunicorn")
    assert renamed["uid"] == "gunicorn-prom-ext-gunicorn"
    assert renamed["title"] == "Gunicorn (gunicorn)"
    for old, new in zip(iter_panels(original), iter_panels(renamed), strict=True):
        old_targets, new_targets = old.pop("targets", []), new.pop("targets", [])
        assert old == new  # titles, descriptions, legends, options: untouched
        for old_target, new_target in zip(old_targets, new_targets, strict=True):
            expected = rename_metrics(old_target.pop("expr"), name_map("gunicorn"))
            assert new_target.pop("expr") == expected
            assert old_target == new_target
    variables = {v["name"]: v["query"] for v in renamed["templating"]["list"]}
    assert variables["job"] == "label_values(gunicorn_gunicorn_info, job)"
    assert variables["instance"] == 'label_values(gunicorn_gunicorn_info{job=~"$job"}, instance)'


def test_long_namespaces_get_a_short_unique_uid() -> None:
    long_a, long_b = "a" * 200, "a" * 199 + "b"
    assert len(namespaced_uid(long_a)) <= 40
    assert namespaced_uid(long_a) != namespaced_uid(long_b)


# --- the commands, run as users run them ------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gunicorn_prom_ext.cli", *args],
        env=environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_without_namespace_the_commands_print_the_shipped_files() -> None:
    dashboard = run("dashboard")
    rules = run("rules")
    assert (dashboard.returncode, dashboard.stderr) == (0, "")
    assert (rules.returncode, rules.stderr) == (0, "")
    assert dashboard.stdout == read_packaged("dashboard.json")
    assert rules.stdout == read_packaged("rules.yml")


def test_namespace_from_the_environment_the_file_and_the_option(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("exporter:\n  prometheus:\n    namespace: from_file\n", encoding="utf-8")

    def namespace_of(result: subprocess.CompletedProcess[str]) -> str:
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        expr = yaml.safe_load(result.stdout)["groups"][1]["rules"][1]["expr"]
        return str(expr).split("gunicorn_workers")[0]

    assert namespace_of(run("rules", "--config", str(config))) == "from_file_"
    assert namespace_of(run("rules", env={"GUNICORN_PROM_EXT_CONFIG": str(config)})) == "from_file_"
    env = {"GUNICORN_PROM_EXT_CONFIG": str(config), "PROMETHEUS_NAMESPACE": "from_env"}
    assert namespace_of(run("rules", env=env)) == "from_env_"
    assert namespace_of(run("rules", "--namespace", "opt", env=env)) == "opt_"
    assert namespace_of(run("rules", "--namespace", "", env=env)) == ""
    dashboard = run("dashboard", env=env)
    assert json.loads(dashboard.stdout)["templating"]["list"][1]["query"] == (
        "label_values(from_env_gunicorn_info, job)"
    )


@pytest.mark.parametrize("command", ["dashboard", "rules"])
@pytest.mark.parametrize("bad", ["9lives", "shop-api", "shop api", "ns:x", "é"])
def test_an_invalid_namespace_is_one_clear_error(command: str, bad: str) -> None:
    result = run(command, "--namespace", bad)
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "invalid gunicorn-prom-ext configuration (1 problem):",
        f"  - namespace (command line): expected a name matching [a-zA-Z_][a-zA-Z0-9_]* or "
        f"empty, got a string {bad!r}",
    ]


def test_a_broken_configuration_file_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("exporter:\n  prometheus:\n    namespace: [1, 2]\n", encoding="utf-8")
    result = run("dashboard", "--config", str(config))
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert "exporter.prometheus.namespace" in result.stderr and str(config) in result.stderr


def test_warns_when_the_latency_objective_is_not_a_bucket_boundary() -> None:
    result = run("rules", env={"PROMETHEUS_DURATION_BUCKETS": "0.1,1,10"})
    assert result.returncode == 0 and result.stdout == read_packaged("rules.yml")
    assert result.stderr.startswith("warning: the latency objective counts requests under 0.5 s")
    assert "(0.1, 1, 10)" in result.stderr
    assert run("rules", env={"PROMETHEUS_DURATION_BUCKETS": "0.25,0.5,1"}).stderr == ""


def test_rules_runbook_base_option() -> None:
    result = run("rules", "--runbook-base", "https://ops.example.org/runbooks")
    assert result.returncode == 0
    assert "runbook_url: https://ops.example.org/runbooks#gunicornhigh5xxratio" in result.stdout
    assert "docs/runbooks.md" not in result.stdout
    assert rules_text("", "docs/runbooks.md") == read_packaged("rules.yml")


def test_a_reader_that_goes_away_is_no_traceback() -> None:
    """`gunicorn-prom-ext dashboard | head -c 1`: the pipe closes mid-way."""
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-m", "gunicorn_prom_ext.cli", "dashboard", "--namespace", "n" * 5000],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert writer.stdout is not None and writer.stderr is not None
    assert writer.stdout.read(1) == b"{"
    writer.stdout.close()
    assert writer.wait(60) == 1
    assert writer.stderr.read() == b""
