"""The committed dashboard and rules are what the generator writes, and the dashboard is one
Grafana reads: the SDK's typed model takes every key, panels do not overlap, and every
query is scoped to the dashboard's variables."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from harness import REPO_ROOT

from gunicorn_prom_ext.kit.render import iter_panels, namespace_dashboard, read_packaged

GENERATOR = REPO_ROOT / "scripts" / "generate_kit.py"


def generate(which: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--print", which],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("which", "name"), [("dashboard", "dashboard.json"), ("rules", "rules.yml")]
)
def test_committed_file_is_what_the_generator_writes(which: str, name: str) -> None:
    # On failure: .venv/bin/python scripts/generate_kit.py, and commit the result.
    assert generate(which) == read_packaged(name)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(read_packaged("dashboard.json"))
    return loaded


def round_trip(data: dict[str, Any]) -> dict[str, Any]:
    """The dashboard through the SDK's typed model: what it does not know is dropped."""
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    back: dict[str, Any] = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    return back


def test_the_sdk_model_reads_every_key_of_the_dashboard() -> None:
    data = dashboard()
    assert round_trip(data) == data
    namespaced = namespace_dashboard(data, "A__b_9")
    assert round_trip(namespaced) == namespaced
    # The check can fail: a key Grafana's schema does not have is not kept.
    broken = copy.deepcopy(data)
    broken["panels"][1]["fieldConfig"]["defaults"]["unitt"] = "s"
    assert round_trip(broken) != broken


def test_layout_ids_and_data_source() -> None:
    data = dashboard()
    panels = list(iter_panels(data))
    assert len([p for p in panels if p["type"] != "row"]) == 30
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not area & cells, panel["title"]
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["description"], panel["title"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["query"] == "label_values(gunicorn_info, job)"
    assert variables["instance"]["query"] == 'label_values(gunicorn_info{job=~"$job"}, instance)'


def test_every_query_is_scoped_to_job_and_instance() -> None:
    for panel in iter_panels(dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            selectors = expr.count("{")
            assert selectors == expr.count('job=~"$job", instance=~"$instance"'), expr
            assert selectors >= 1, expr


def test_quantiles_aggregate_buckets_by_le() -> None:
    quantiles = [
        target["expr"]
        for panel in iter_panels(dashboard())
        for target in panel.get("targets", [])
        if "histogram_quantile" in target["expr"]
    ]
    assert len(quantiles) == 9
    for expr in quantiles:
        assert re.match(r"histogram_quantile\(0\.\d+, sum by \(le[,)]", expr), expr
        assert "_bucket{" in expr and "[$__rate_interval]" in expr, expr
