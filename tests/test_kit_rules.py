"""The shipped Prometheus rules: promtool checks them and runs their unit tests, with and
without a namespace, and every alert is tested, annotated and has a runbook section."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO_ROOT, require_tool

from gunicorn_prom_ext.kit.names import name_map
from gunicorn_prom_ext.kit.promql import rename_metrics
from gunicorn_prom_ext.kit.render import iter_rules, namespace_rules, rules_text

RULES_TESTS = REPO_ROOT / "tests" / "rules" / "alerts_test.yml"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
# Valid namespaces, some of them odd: one that is itself a metric-name prefix, underscores.
NAMESPACES = ["", "shop", "_", "A__b_9", "gunicorn", "http_server"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=120
    )


def shipped_rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(rules_text())
    return loaded


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in iter_rules(shipped_rules()) if "alert" in rule]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_promtool_checks_the_rules(namespace: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(rules_text(namespace), encoding="utf-8")
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 21 rules found" in result.stdout


def test_promtool_unit_tests_pass_on_the_committed_files() -> None:
    result = promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("namespace", ["shop", "_", "A__b_9", "http_server"])
def test_promtool_unit_tests_pass_with_a_namespace(namespace: str, tmp_path: Path) -> None:
    """The same tests, their series renamed as the namespaced server would expose them."""
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(rules_text(namespace), encoding="utf-8")
    tests: dict[str, Any] = yaml.safe_load(RULES_TESTS.read_text(encoding="utf-8"))
    names = name_map(namespace)
    tests["rule_files"] = [str(rules_path)]
    for case in tests["tests"]:
        for series in case["input_series"]:
            series["series"] = rename_metrics(series["series"], names)
    tests_path = tmp_path / "alerts_test.yml"
    tests_path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = promtool("test", "rules", str(tests_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    """The unit tests can fail: a threshold moved from 5 % to 20 % is caught."""
    changed = rules_text().replace(
        "expr: job_route:http_server_5xx:ratio_rate5m > 0.05",
        "expr: job_route:http_server_5xx:ratio_rate5m > 0.2",
    )
    assert changed != rules_text()
    (tmp_path / "rules.yml").write_text(changed, encoding="utf-8")
    tests: dict[str, Any] = yaml.safe_load(RULES_TESTS.read_text(encoding="utf-8"))
    tests["rule_files"] = [str(tmp_path / "rules.yml")]
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = promtool("test", "rules", str(tmp_path / "t.yml"))
    assert result.returncode != 0
    assert "alertname: GunicornHigh5xxRatio" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests: dict[str, Any] = yaml.safe_load(RULES_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert len(names) == 11
    assert firing == names
    assert quiet == names


def test_every_alert_says_what_and_where_and_links_its_runbook() -> None:
    headings = {
        line[3:].strip().lower()
        for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    for rule in alerts():
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert "{{ $labels.job }}" in annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        anchor = annotations["runbook_url"].removeprefix("docs/runbooks.md#")
        assert anchor == rule["alert"].lower() and anchor in headings, rule["alert"]
    per_instance = {
        r["alert"] for r in alerts() if "$labels.instance" in r["annotations"]["description"]
    }
    assert per_instance == {r["alert"] for r in alerts()} - {
        "GunicornHigh5xxRatio",
        "GunicornLatencyBudgetBurnFast",
        "GunicornLatencyBudgetBurnSlow",
    }


def test_the_latency_objective_uses_a_default_bucket_boundary() -> None:
    from gunicorn_prom_ext.settings import DEFAULT_DURATION_BUCKETS

    boundaries = set(re.findall(r'le="([^"]+)"', rules_text()))
    assert boundaries == {"0.5"}
    assert 0.5 in DEFAULT_DURATION_BUCKETS


def test_runbook_base_rewrites_only_runbook_links() -> None:
    base = "https://wiki.example.org/ops/gunicorn.md"
    moved: dict[str, Any] = yaml.safe_load(rules_text("", runbook_base=base))
    original = shipped_rules()
    for old, new in zip(iter_rules(original), iter_rules(moved), strict=True):
        if "alert" in old:
            anchor = old["annotations"]["runbook_url"].split("#")[1]
            assert new["annotations"]["runbook_url"] == f"{base}#{anchor}"
            new["annotations"]["runbook_url"] = old["annotations"]["runbook_url"]
        assert new == old


def test_namespacing_renames_recording_rules_and_their_uses_only() -> None:
    renamed = namespace_rules(shipped_rules(), "shop")
    records = [r["record"] for r in iter_rules(renamed) if "record" in r]
    assert records[0] == "job_route:shop_http_server_5xx:ratio_rate5m"
    assert "instance:shop_gunicorn_worker_utilisation:ratio_avg1m" in records
    by_alert = {r["alert"]: r for r in iter_rules(renamed) if "alert" in r}
    assert by_alert["GunicornUtilisationHigh"]["expr"] == (
        "instance:shop_gunicorn_worker_utilisation:ratio_avg1m > 0.85"
    )
    assert by_alert["GunicornMetricsEndpointDown"]["expr"] == (
        "up == 0\nand on (job, instance)\npresent_over_time(shop_gunicorn_info[1d])"
    )
    # Annotations, labels and names of alerts and groups are not touched.
    original = {r["alert"]: r for r in iter_rules(shipped_rules()) if "alert" in r}
    for name, rule in by_alert.items():
        assert rule["annotations"] == original[name]["annotations"]
        assert rule["labels"] == original[name]["labels"]


def test_alerts_read_recording_rules_of_their_own_group_evaluated_before_them() -> None:
    """Groups run concurrently: an alert in another group could read last round's value
    (promtool showed 19.67 % instead of 20 % at random before the rules were grouped)."""
    for group in shipped_rules()["groups"]:
        recorded_so_far: set[str] = set()
        for rule in group["rules"]:
            if "record" in rule:
                recorded_so_far.add(rule["record"])
                continue
            used = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", rule["expr"]))
            assert used <= recorded_so_far, (rule["alert"], used - recorded_so_far)
    all_records = [r["record"] for r in iter_rules(shipped_rules()) if "record" in r]
    assert len(all_records) == len(set(all_records)) == 10
