"""The operator kit against a real Prometheus scraping a real gunicorn.

One Prometheus (1 s scrape and evaluation interval, the shipped rules loaded, configured
from the scrape_configs example of docs/scrape-config.md) scrapes the example shop app
(2 sync workers). The test drives traffic (successes, errors, slow requests, requests
waiting in the backlog, requests stamped with X-Request-Start), SIGKILLs a worker, drops
a corrupt file into the metrics directory and sends HUP; then every dashboard panel
query, every recording rule and every query of docs/promql-cookbook.md must return data,
the request counts Prometheus reports must equal what was sent, and the alerts this
causes must be the ones that fire.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO_ROOT, Gunicorn, require_tool
from prometheus_client.parser import text_string_to_metric_families
from prometheus_harness import Prometheus, PrometheusError, finite_points, now
from test_kit_rules import promtool

from gunicorn_prom_ext.kit.names import METRICS, sample_names
from gunicorn_prom_ext.kit.promql import tokenize
from gunicorn_prom_ext.kit.render import dashboard_text, iter_panels, iter_rules, rules_text

pytestmark = pytest.mark.slow

# Metrics the dashboard, the rules and the docs query but the server does not expose yet:
# their queries are checked only once it does. Every metric is exposed today.
PENDING_METRICS: set[str] = set()

SHOP = REPO_ROOT / "example_projects" / "shop_wsgi"
SCRAPE_DOC = REPO_ROOT / "docs" / "scrape-config.md"
COOKBOOK = REPO_ROOT / "docs" / "promql-cookbook.md"
JOB = "shop"
SCRAPE_INTERVAL = "1s"
# What Grafana substitutes with a 1 s scrape interval: $__rate_interval is at least four
# scrape intervals; the range queries below use a 1 s step ($__interval).
RATE_INTERVAL = "4s"

RequestKey = tuple[str, str, str]  # method, route, status


def code_blocks(path: Path, language: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def families_in(expr: str) -> set[str]:
    """The families of this package's metrics that a query reads."""
    family_of = {name: family for family in METRICS for name in sample_names(family)}
    return {family_of[t.text] for t in tokenize(expr) if t.kind == "ident" and t.text in family_of}


@dataclass
class Stack:
    gunicorn: Gunicorn
    prometheus: Prometheus
    sent: Counter[RequestKey]
    exposed: set[str]  # metric families the server exposes
    started: float
    instance: str

    def checkable(self, expr: str) -> bool:
        """False for a query on a pending metric the server does not expose yet."""
        return not (families_in(expr) & (PENDING_METRICS - self.exposed))


def prometheus_config(metrics_port: int) -> dict[str, Any]:
    """The first yaml block of docs/scrape-config.md, on our port and with 1 s intervals."""
    config: dict[str, Any] = yaml.safe_load(code_blocks(SCRAPE_DOC, "yaml")[0])
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL,
        scrape_timeout=SCRAPE_INTERVAL,
    )  # fmt: skip
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    (targets,) = job["static_configs"]
    assert targets["targets"] == ["127.0.0.1:9091"]
    targets["targets"] = [f"127.0.0.1:{metrics_port}"]
    return config


def drive_traffic(g: Gunicorn, prometheus: Prometheus, sent: Counter[RequestKey]) -> None:
    def send(method: str, path: str, route: str, status: int, **kwargs: Any) -> None:
        got, _ = g.request(path, method=method, **kwargs)
        assert got == status, (method, path, got)
        sent[(method, route, str(status))] += 1

    # One request of each kind first, and a scrape: a series that first appears with its
    # final value has no increase for rate() to see (as after any restart).
    send("GET", "/", "/", 200)
    send("GET", "/items/1", "/items/<id>", 200)
    send("GET", "/items/0", "/items/<id>", 404)
    send("POST", "/items", "/items", 201, body=b"x" * 500)
    send("GET", "/fail", "/fail", 500)
    send("GET", "/no/such/page", "", 404)
    total = f'sum(http_server_request_duration_seconds_count{{job="{JOB}"}})'
    prometheus.wait_value(total, float(sum(sent.values())))
    for _ in range(20):  # stamped by a "proxy" 50 ms before gunicorn reads them
        send("GET", "/", "/", 200, headers={"X-Request-Start": f"t={time.time() - 0.05:.6f}"})
    for item in range(200):
        send("GET", f"/items/{item % 99 + 1}", "/items/<id>", 200)
    for _ in range(3):
        send("GET", "/items/0", "/items/<id>", 404)
    for _ in range(5):
        send("POST", "/items", "/items", 201, body=b"x" * 500)
    for _ in range(4):
        send("GET", "/fail", "/fail", 500)
    for _ in range(2):
        send("GET", "/no/such/page", "", 404)
    # Both workers busy for 1.5 s, two more requests waiting in the listen backlog: the
    # scrapes meanwhile see in-flight requests at capacity and a non-empty backlog.
    threads = [threading.Thread(target=send, args=("GET", "/slow?seconds=1.5", "/slow", 200))
               for _ in range(2)]  # fmt: skip
    threads += [threading.Thread(target=send, args=("GET", "/items/7", "/items/<id>", 200))
                for _ in range(2)]  # fmt: skip
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    g = Gunicorn("app:app", workers=2, cwd=SHOP, tmp_dir=tmp_path_factory.mktemp("shop"))
    with g:
        families = text_string_to_metric_families(g.metrics_text())
        exposed = {family.name for family in families}
        with Prometheus(prometheus_config(g.metrics_port), rules_text()) as prometheus:
            prometheus.wait_value(f'up{{job="{JOB}"}}', 1.0)
            started = now()
            sent: Counter[RequestKey] = Counter()
            drive_traffic(g, prometheus, sent)

            killed = g.worker_pids()[0]
            os.kill(killed, signal.SIGKILL)
            g.wait_for(lambda: len(set(g.worker_pids()) - {killed}) == 2, message="respawn")
            (g.multiproc_dir / "histogram_4343.db").write_bytes(b"\xff" * 100)  # garbage
            prometheus.wait_value('gunicorn_worker_exits_total{reason="killed"}', 1.0)
            prometheus.wait_value('gunicorn_prom_ext_faults_total{kind="storage"}', 1.0)

            before_hup = set(g.worker_pids())
            g.signal(signal.SIGHUP)
            g.wait_for(lambda: len(set(g.worker_pids()) - before_hup) == 2, message="HUP")
            for _ in range(5):
                status, _ = g.request("/")
                assert status == 200
                sent[("GET", "/", "200")] += 1
            prometheus.wait_value(
                f'sum(http_server_request_duration_seconds_count{{job="{JOB}"}})',
                float(sum(sent.values())),
            )
            prometheus.wait_value('gunicorn_worker_exits_total{reason="graceful"}', 2.0)
            yield Stack(g, prometheus, sent, exposed, started, f"127.0.0.1:{g.metrics_port}")


def test_request_counts_prometheus_reports_are_what_was_sent(stack: Stack) -> None:
    # Prometheus drops empty labels: an unmatched request has no http_route there.
    expected = {
        tuple(
            (k, v)
            for k, v in (("http_request_method", m), ("http_response_status_code", s),
                         ("http_route", r))
            if v
        ): float(n)
        for (m, r, s), n in stack.sent.items()
    }  # fmt: skip
    by_labels = "sum by (http_request_method, http_route, http_response_status_code)"
    for histogram in (
        "http_server_request_duration_seconds",
        "http_server_request_body_size_bytes",
        "http_server_response_body_size_bytes",
    ):
        got = stack.prometheus.values(f'{by_labels} ({histogram}_count{{job="{JOB}"}})')
        assert got == expected, histogram
    received = stack.prometheus.values(
        f'sum(http_server_request_body_size_bytes_sum{{job="{JOB}"}})'
    )
    assert list(received.values()) == [500.0 * stack.sent[("POST", "/items", "201")]]
    server = {
        'gunicorn_worker_exits_total{reason="killed"}': 1.0,
        'gunicorn_worker_exits_total{reason="graceful"}': 2.0,
        'gunicorn_worker_exits_total{reason="timeout"}': 0.0,
        "gunicorn_reloads_total": 1.0,
        "gunicorn_worker_spawns_total": 5.0,  # 2 at start, 1 after the kill, 2 after HUP
        "gunicorn_workers": 2.0,
        "gunicorn_workers_desired": 2.0,
        "gunicorn_worker_capacity": 2.0,
        'gunicorn_prom_ext_faults_total{kind="storage"}': 1.0,
    }
    for expr, value in server.items():
        assert list(stack.prometheus.values(expr).values()) == [value], expr
    queued = stack.prometheus.values("http_server_request_queue_duration_seconds_count")
    assert list(queued.values()) == [20.0]  # only the requests that carried the stamp


def grafana_substitute(expr: str, stack: Stack, range_seconds: float) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "1s")
        .replace("$__range", f"{math.ceil(range_seconds)}s")
        .replace("$job", JOB)
        # Grafana escapes regex characters of a value for a PromQL string: `\\.`.
        .replace("$instance", re.escape(stack.instance).replace("\\", "\\\\"))
    )


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    end = now()
    start = end - math.ceil(end - stack.started + 2)  # a grid of 1 s steps ending now
    checked, pending, empty = 0, [], []
    for panel in iter_panels(json.loads(dashboard_text())):
        for target in panel.get("targets", []):
            if not stack.checkable(target["expr"]):
                pending.append(panel["title"])
                continue
            expr = grafana_substitute(target["expr"], stack, end - start)
            assert "$" not in expr, expr
            series = stack.prometheus.query_range(expr, start, end, step=1)
            checked += 1
            if not finite_points(series):
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    assert checked + len(pending) == 39
    if PENDING_METRICS - stack.exposed:
        assert pending == ["Request queue time p50 / p95"] * 2


def test_the_dashboard_variables_list_the_job_and_the_instance(stack: Stack) -> None:
    jobs = stack.prometheus.api("series", **{"match[]": "gunicorn_info"})
    assert {(s["job"], s["instance"]) for s in jobs} == {(JOB, stack.instance)}


def test_every_recording_rule_returns_data(stack: Stack) -> None:
    rules = [rule for rule in iter_rules(yaml.safe_load(rules_text())) if "record" in rule]
    assert len(rules) == 10
    empty = []
    for rule in rules:
        if not stack.checkable(rule["expr"]):
            continue
        values = stack.prometheus.values(rule["record"])
        if not any(math.isfinite(v) for v in values.values()):
            empty.append(rule["record"])
    assert not empty, f"recording rules without data: {empty}"
    # Every /fail request failed, no other route did.
    errors = stack.prometheus.values("job_route:http_server_5xx:ratio_rate5m")
    name = ("__name__", "job_route:http_server_5xx:ratio_rate5m")
    assert errors == {(name, ("http_route", "/fail"), ("job", JOB)): 1.0}


def test_the_alerts_the_traffic_causes(stack: Stack) -> None:
    """A SIGKILLed worker and a corrupt file fire at once; the failing route is pending
    (for 5 minutes); nothing else: 2 slow requests in ~240 stay within the objective."""
    expected = {
        ("GunicornWorkerKilledOrTimedOut", "firing", "killed"),
        ("GunicornPromExtFaults", "firing", "storage"),
        ("GunicornHigh5xxRatio", "pending", "/fail"),
    }
    seen: set[tuple[str, str, str]] = set()

    def alerts() -> bool:
        seen.clear()
        for alert in stack.prometheus.api("alerts")["alerts"]:
            labels = alert["labels"]
            where = labels.get("reason") or labels.get("kind") or labels.get("http_route", "")
            seen.add((labels["alertname"], alert["state"], where))
        return seen == expected

    deadline = time.monotonic() + 15
    while not alerts() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert seen == expected


def test_every_cookbook_query_returns_data(stack: Stack) -> None:
    queries = code_blocks(COOKBOOK, "promql")
    assert len(queries) == 17
    empty = []
    for expr in queries:
        if not stack.checkable(expr):
            continue
        try:
            values = stack.prometheus.values(expr)
        except PrometheusError as exc:
            empty.append(f"{expr}: {exc}")
            continue
        if not any(math.isfinite(v) for v in values.values()):
            empty.append(expr)
    assert not empty, "cookbook queries without data:\n" + "\n".join(empty)


def test_the_scrape_config_examples_are_valid(tmp_path: Path) -> None:
    require_tool("promtool")
    first, *others = code_blocks(SCRAPE_DOC, "yaml")
    (tmp_path / "prometheus.yml").write_text(first, encoding="utf-8")
    (tmp_path / "gunicorn-prom-ext.rules.yml").write_text(rules_text(), encoding="utf-8")
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 21 rules found" in result.stdout
    assert len(others) == 3
    for index, block in enumerate(others):
        path = tmp_path / f"example-{index}.yml"
        path.write_text(block, encoding="utf-8")
        result = promtool("check", "config", "--syntax-only", str(path))
        assert result.returncode == 0, block + result.stdout + result.stderr
    (targets,) = code_blocks(SCRAPE_DOC, "json")
    groups = json.loads(targets)
    assert groups == [{"targets": ["app-1.internal:9091", "app-2.internal:9091"],
                       "labels": {"service": "shop"}}]  # fmt: skip
