"""The Prometheus rules of the operator kit, as data (written by scripts/generate_kit.py).

Queries use the metric names without a namespace; ``gunicorn-prom-ext rules`` applies one.
Alerts locate the problem with the labels they keep (job, instance, route, reason,
listener, kind) and link to their section of docs/runbooks.md.
"""

from __future__ import annotations

from typing import Any

from gunicorn_prom_ext.kit.render import RUNBOOK_BASE, SLO_LATENCY_SECONDS

# Latency objective: 99 % of requests within SLO_LATENCY_SECONDS, per job.
SLO_OBJECTIVE = 0.99
ERROR_BUDGET = round(1 - SLO_OBJECTIVE, 6)
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
ERROR_RATIO_THRESHOLD = 0.05
UTILISATION_SOFT = 0.85  # GitLab's Puma saturation: soft objective
UTILISATION_HARD = 0.90  # and hard objective
QUEUE_P95_THRESHOLD_SECONDS = 0.1

REQUESTS = "http_server_request_duration_seconds"
SLOW_RATIO = "job:http_server_slow_requests:ratio_rate{window}"
ERROR_RATIO = "job_route:http_server_5xx:ratio_rate5m"
UTILISATION = "instance:gunicorn_worker_utilisation:ratio_avg1m"
QUEUE_P95 = "instance:http_server_request_queue_duration_seconds:p95_5m"

Rule = dict[str, Any]

# Alerts on request metrics; the others watch the server.
REQUEST_ALERTS = frozenset(
    {
        "GunicornHigh5xxRatio",
        "GunicornLatencyBudgetBurnFast",
        "GunicornLatencyBudgetBurnSlow",
        "GunicornRequestQueueTimeHigh",
    }
)


def recording_rules() -> list[Rule]:
    rules: list[Rule] = [
        {
            "record": ERROR_RATIO,
            "expr": (
                "sum by (job, http_route) (\n"
                f'  rate({REQUESTS}_count{{http_response_status_code=~"5.."}}[5m])\n'
                ")\n"
                "/\n"
                f"sum by (job, http_route) (rate({REQUESTS}_count[5m]))"
            ),
        }
    ]
    for window in SLO_WINDOWS:
        rules.append(
            {
                "record": slow_ratio(window),
                "expr": (
                    "1 - (\n"
                    f"  sum by (job) (rate({REQUESTS}_bucket"
                    f'{{le="{SLO_LATENCY_SECONDS}"}}[{window}]))\n'
                    "  /\n"
                    f"  sum by (job) (rate({REQUESTS}_count[{window}]))\n"
                    ")"
                ),
            }
        )
    rules += [
        {
            # In-flight requests against what the live workers can serve at once, averaged
            # over a minute (a scrape only sees an instant). `without` keeps every label
            # that locates an instance (job, instance, and gunicorn_instance behind the
            # Redis sidecar).
            "record": UTILISATION,
            "expr": (
                "sum without (http_request_method) (\n"
                "  avg_over_time(http_server_active_requests[1m])\n"
                ")\n"
                "/\n"
                "avg_over_time(gunicorn_worker_capacity[1m])"
            ),
        },
        {
            # The queue histogram has no labels of its own: no aggregation needed per instance.
            "record": QUEUE_P95,
            "expr": (
                "histogram_quantile(0.95, "
                "rate(http_server_request_queue_duration_seconds_bucket[5m]))"
            ),
        },
    ]
    return rules


def slow_ratio(window: str) -> str:
    """Name of the recorded share of requests slower than the objective over ``window``."""
    return SLOW_RATIO.format(window=window)


def _burn(long: str, short: str, factor: float) -> str:
    threshold = f"({factor:g} * {ERROR_BUDGET:g})"
    return f"(\n  {slow_ratio(long)} > {threshold}\n  and\n  {slow_ratio(short)} > {threshold}\n)"


def _alert(
    name: str, expr: str, severity: str, summary: str, description: str, for_: str | None = None
) -> Rule:
    rule: Rule = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{RUNBOOK_BASE}#{name.lower()}",
    }
    return rule


def alerting_rules() -> list[Rule]:
    slo = f"{SLO_OBJECTIVE:.0%} of requests within {SLO_LATENCY_SECONDS} s"
    return [
        _alert(
            "GunicornHigh5xxRatio",
            f"{ERROR_RATIO} > {ERROR_RATIO_THRESHOLD}",
            "warning",
            "{{ $labels.job }}: {{ $value | humanizePercentage }} of requests to "
            '"{{ $labels.http_route }}" answer 5xx',
            "Over the last 5 minutes {{ $value | humanizePercentage }} of the requests that job "
            '{{ $labels.job }} served on route "{{ $labels.http_route }}" answered with a 5xx '
            f"status (threshold {ERROR_RATIO_THRESHOLD:.0%}). An empty route means requests "
            "no route matched.",
            "5m",
        ),
        _alert(
            "GunicornLatencyBudgetBurnFast",
            f"{_burn('1h', '5m', 14.4)}\nor\n{_burn('6h', '30m', 6)}",
            "critical",
            "{{ $labels.job }} burns its latency error budget fast",
            f"Job {{{{ $labels.job }}}} misses its latency objective ({slo}) at 14.4 times "
            "the sustainable rate over 1 h (and 5 min), or 6 times over 6 h (and 30 min): "
            "{{ $value | humanizePercentage }} of requests are slower than the objective. At "
            "this pace a 30-day error budget is gone in 2 to 5 days.",
        ),
        _alert(
            "GunicornLatencyBudgetBurnSlow",
            f"{_burn('1d', '2h', 3)}\nor\n{_burn('3d', '6h', 1)}",
            "warning",
            "{{ $labels.job }} burns its latency error budget",
            f"Job {{{{ $labels.job }}}} misses its latency objective ({slo}) at 3 times the "
            "sustainable rate over 1 day (and 2 h), or faster than sustainable over 3 days "
            "(and 6 h): {{ $value | humanizePercentage }} of requests are slower than the "
            "objective.",
        ),
        _alert(
            "GunicornWorkersBelowDesired",
            "gunicorn_workers < gunicorn_workers_desired",
            "warning",
            "{{ $labels.instance }}: fewer gunicorn workers alive than desired",
            "Only {{ $value }} workers of {{ $labels.instance }} (job {{ $labels.job }}) have "
            "been alive for 3 minutes, fewer than the master aims for: workers fail to boot "
            "or keep dying.",
            "3m",
        ),
        _alert(
            "GunicornWorkerKilledOrTimedOut",
            'increase(gunicorn_worker_exits_total{reason=~"timeout|killed"}[10m]) > 0',
            "warning",
            "{{ $labels.instance }}: a gunicorn worker exited ({{ $labels.reason }})",
            "About {{ $value | humanize }} worker(s) of {{ $labels.instance }} (job "
            '{{ $labels.job }}) exited with reason "{{ $labels.reason }}" in the last 10 '
            "minutes. killed: SIGKILL, the out-of-memory killer or a crash; timeout: the "
            "master aborted a worker silent for longer than --timeout. The requests they were "
            "serving were lost.",
        ),
        _alert(
            "GunicornListenBacklogGrowing",
            "min_over_time(gunicorn_listen_backlog[2m]) > 0\n"
            "and\n"
            "deriv(gunicorn_listen_backlog[5m]) > 0",
            "warning",
            "{{ $labels.instance }}: connections pile up in the listen backlog",
            "The accept queue of {{ $labels.listener }} on {{ $labels.instance }} (job "
            "{{ $labels.job }}) has held at least {{ $value }} connections throughout the last "
            "2 minutes and keeps growing: every worker is busy, and clients wait before "
            "gunicorn even reads their request.",
            "3m",
        ),
        _alert(
            "GunicornUtilisationHigh",
            f"{UTILISATION} > {UTILISATION_SOFT}",
            "warning",
            "{{ $labels.instance }}: workers {{ $value | humanizePercentage }} busy",
            "{{ $labels.instance }} (job {{ $labels.job }}) has averaged "
            "{{ $value | humanizePercentage }} of its request capacity in use for 5 minutes "
            f"(soft limit {UTILISATION_SOFT:.0%}): little headroom is left before requests "
            "queue.",
            "5m",
        ),
        _alert(
            "GunicornUtilisationCritical",
            f"{UTILISATION} > {UTILISATION_HARD}",
            "critical",
            "{{ $labels.instance }}: workers {{ $value | humanizePercentage }} busy",
            "{{ $labels.instance }} (job {{ $labels.job }}) has averaged "
            "{{ $value | humanizePercentage }} of its request capacity in use for 5 minutes "
            f"(hard limit {UTILISATION_HARD:.0%}): requests are queueing or about to.",
            "5m",
        ),
        _alert(
            "GunicornMetricsEndpointDown",
            # Only targets that served this package's metrics in the last day: `up` alone
            # would cover every target of the Prometheus server.
            "up == 0\nand on (job, instance)\npresent_over_time(gunicorn_info[1d])",
            "critical",
            "{{ $labels.instance }}: gunicorn metrics endpoint down",
            "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) "
            "for 2 minutes: the gunicorn master is down, or its metrics endpoint is "
            "unreachable. Every other alert of this instance is blind meanwhile.",
            "2m",
        ),
        _alert(
            "GunicornPromExtFaults",
            # A fault counter appears at its first fault, so a new series counts too:
            # increase() needs two samples and would miss it.
            "increase(gunicorn_prom_ext_faults_total[10m]) > 0\n"
            "or\n"
            "(\n"
            "  gunicorn_prom_ext_faults_total\n"
            "  unless gunicorn_prom_ext_faults_total offset 10m\n"
            ") > 0",
            "warning",
            "{{ $labels.instance }}: gunicorn-prom-ext contained faults ({{ $labels.kind }})",
            "gunicorn-prom-ext on {{ $labels.instance }} (job {{ $labels.job }}) counted faults "
            'of kind "{{ $labels.kind }}" in the last 10 minutes. Requests were served; some '
            "metrics may be missing. The server log has the first occurrence.",
        ),
        _alert(
            "GunicornRequestQueueTimeHigh",
            f"{QUEUE_P95} > {QUEUE_P95_THRESHOLD_SECONDS}",
            "warning",
            "{{ $labels.instance }}: requests wait {{ $value | humanizeDuration }} before a "
            "worker takes them (p95)",
            "The 95th percentile of the time requests to {{ $labels.instance }} (job "
            "{{ $labels.job }}) spent between the proxy's X-Request-Start stamp and a worker "
            f"has been {{{{ $value | humanizeDuration }}}} for 5 minutes (threshold "
            f"{QUEUE_P95_THRESHOLD_SECONDS:g} s): the server is saturated.",
            "5m",
        ),
    ]


def rules() -> dict[str, Any]:
    # Rules of one group run in order at the same instant, groups concurrently: each alert
    # sits in the group of the recording rules it reads, after them, so it always reads
    # this evaluation's values, never the previous evaluation's.
    records = recording_rules()
    alerts = alerting_rules()
    server_records = [rule for rule in records if rule["record"] == UTILISATION]
    server_alerts = [rule for rule in alerts if rule["alert"] not in REQUEST_ALERTS]
    return {
        "groups": [
            {
                "name": "gunicorn-prom-ext.requests",
                "rules": [rule for rule in records if rule not in server_records]
                + [rule for rule in alerts if rule["alert"] in REQUEST_ALERTS],
            },
            {"name": "gunicorn-prom-ext.server", "rules": server_records + server_alerts},
        ]
    }
