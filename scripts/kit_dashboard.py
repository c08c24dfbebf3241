"""The operator kit's Grafana dashboard, as code (written by scripts/generate_kit.py).

Top to bottom, what an on-call engineer asks: is it serving (traffic, errors, latency), is
it full (in flight against capacity, backlog, queue time), are the workers healthy (alive
against desired, exits by reason, resources per slot), what flows through it (sizes), and
is the exporter itself fine. Metric names carry no namespace here; ``gunicorn-prom-ext
dashboard`` applies one.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard
from kit_panels import DATASOURCE, RATE, SELECTOR, Query, Step, graph, row, single
from kit_rules import SLO_OBJECTIVE, UTILISATION_HARD, UTILISATION_SOFT

from gunicorn_prom_ext.kit.render import DASHBOARD_UID, SLO_LATENCY_SECONDS

REQUESTS = "http_server_request_duration_seconds"
QUEUE = "http_server_request_queue_duration_seconds"
FIVE_XX = 'http_response_status_code=~"5.."'
EXIT_COLORS = {
    "graceful": "green",
    "max_requests": "blue",
    "error": "orange",
    "timeout": "red",
    "killed": "dark-red",
}
SATURATION_STEPS = (Step(None, "green"), Step(UTILISATION_SOFT, "orange"),
                    Step(UTILISATION_HARD, "red"))  # fmt: skip


def rate(metric: str, by: str = "", matchers: str = "", window: str = RATE) -> str:
    selector = f"{SELECTOR}, {matchers}" if matchers else SELECTOR
    return _sum(f"rate({metric}{{{selector}}}[{window}])", by)


def quantile(q: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q:g}, {rate(metric + '_bucket', labels)})"


def gauge(metric: str, by: str = "") -> str:
    return _sum(f"{metric}{{{SELECTOR}}}", by)


def _sum(inner: str, by: str) -> str:
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def overview() -> list[Any]:
    return [
        single("Requests/s", "Requests completed per second.",
               [Query(rate(f"{REQUESTS}_count"))], "reqps"),
        single("5xx ratio", "Share of requests answered with a 5xx status.",
               [Query(f"({rate(f'{REQUESTS}_count', matchers=FIVE_XX)} or vector(0))\n/\n"
                      f"{rate(f'{REQUESTS}_count')}")], "percentunit",
               steps=(Step(None, "green"), Step(0.01, "orange"), Step(0.05, "red"))),
        single("Latency p95", "95th percentile of request duration, all routes.",
               [Query(quantile(0.95, REQUESTS))], "s",
               steps=(Step(None, "green"), Step(SLO_LATENCY_SECONDS, "red"))),
        single("Utilisation", "Requests in flight / requests the live workers can serve at "
               "once. Above 85 % little headroom is left; above 90 % requests queue.",
               [Query(f"{gauge('http_server_active_requests')}\n/\n"
                      f"{gauge('gunicorn_worker_capacity')}")], "percentunit",
               steps=SATURATION_STEPS),
        single("Workers alive / desired", "Worker processes alive, and how many the master "
               "aims for.", [Query(gauge("gunicorn_workers"), "alive"),
                             Query(gauge("gunicorn_workers_desired"), "desired")], "short",
               text_mode=common.BigValueTextMode.VALUE_AND_NAME),
        single("Workers killed or timed out", "Worker exits by SIGKILL, the out-of-memory "
               "killer, a crash (killed) or the master's timeout, in the selected range.",
               [Query(f"sum(increase(gunicorn_worker_exits_total{{{SELECTOR}, "
                      f'reason=~"timeout|killed"}}[$__range]))')], "short",
               steps=(Step(None, "green"), Step(1, "red")), decimals=0),
    ]


def traffic() -> list[Any]:
    return [
        graph("Requests/s by route", "Completed requests per second, by route template "
              "(empty: no route matched).",
              [Query(rate(f"{REQUESTS}_count", "http_route"), "{{http_route}}")], "reqps"),
        graph("Requests/s by status", "Completed requests per second, by response status.",
              [Query(rate(f"{REQUESTS}_count", "http_response_status_code"),
                     "{{http_response_status_code}}")], "reqps"),
        graph("5xx ratio by route", "Share of each route's requests answered with a 5xx "
              "status. The GunicornHigh5xxRatio alert fires above 5 % for 5 minutes.",
              [Query(f"{rate(f'{REQUESTS}_count', 'http_route', FIVE_XX)}\n/\n"
                     f"{rate(f'{REQUESTS}_count', 'http_route')}", "{{http_route}}")],
              "percentunit", steps=(Step(None, "green"), Step(0.05, "red"))),
    ]


def latency() -> list[Any]:
    objective = (Step(None, "green"), Step(SLO_LATENCY_SECONDS, "red"))
    fast = rate(f"{REQUESTS}_bucket", "http_route", f'le="{SLO_LATENCY_SECONDS}"')
    slower = f"1 - (\n{fast}\n/\n{rate(f'{REQUESTS}_count', 'http_route')}\n)"
    return [
        graph("Latency p50 / p95 / p99", "Request duration quantiles over all routes "
              "(from pre_request to post_request in the worker).",
              [Query(quantile(q, REQUESTS), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
              "s", steps=objective),
        graph("Latency p95 by route", "95th percentile of request duration, by route.",
              [Query(quantile(0.95, REQUESTS, "http_route"), "{{http_route}}")], "s",
              steps=objective),
        graph(f"Requests slower than {SLO_LATENCY_SECONDS:g} s", "Share of each route's "
              f"requests slower than the latency objective (objective: {SLO_OBJECTIVE:.0%} "
              f"within {SLO_LATENCY_SECONDS:g} s; the burn-rate alerts watch it per job).",
              [Query(slower, "{{http_route}}")],
              "percentunit", steps=(Step(None, "green"), Step(round(1 - SLO_OBJECTIVE, 6), "red"))),
    ]


def saturation() -> list[Any]:
    return [
        graph("In flight vs capacity", "Requests being served now, against the requests the "
              "live workers can serve at once (workers x threads, or x worker_connections).",
              [Query(gauge("http_server_active_requests", "instance"), "{{instance}} in flight"),
               Query(gauge("gunicorn_worker_capacity", "instance"), "{{instance}} capacity")],
              "short", width=6),
        graph("Utilisation", "In flight / capacity per instance. GunicornUtilisationHigh "
              "fires above 85 %, GunicornUtilisationCritical above 90 % (1-minute average, "
              "for 5 minutes).",
              [Query(f"{gauge('http_server_active_requests', 'instance')}\n/\n"
                     f"{gauge('gunicorn_worker_capacity', 'instance')}", "{{instance}}")],
              "percentunit", width=6, steps=SATURATION_STEPS),
        graph("Listen backlog", "Connections waiting in each listener's accept queue: "
              "clients the workers have not picked up yet. Sustained non-zero means saturation.",
              [Query(gauge("gunicorn_listen_backlog", "instance, listener"),
                     "{{instance}} {{listener}}")], "short", width=6),
        graph("Request queue time p50 / p95", "Time from the proxy's X-Request-Start stamp "
              "to a worker picking the request up. Needs a proxy that sets the header "
              "(e.g. nginx: proxy_set_header X-Request-Start \"t=${msec}\").",
              [Query(quantile(q, QUEUE), f"p{round(q * 100)}") for q in (0.5, 0.95)], "s",
              width=6, steps=(Step(None, "green"), Step(0.1, "red"))),
    ]


def workers() -> list[Any]:
    return [
        graph("Workers alive vs desired", "Worker processes alive, and how many the master "
              "aims for (TTIN/TTOU change it).",
              [Query(gauge("gunicorn_workers", "instance"), "{{instance}} alive"),
               Query(gauge("gunicorn_workers_desired", "instance"), "{{instance}} desired")],
              "short"),
        graph("Worker exits by reason", "Worker exits within each point's rate window (at "
              "least four scrapes), so one exit shows as a bump that wide. killed: SIGKILL, OOM "
              "killer, crash; timeout: aborted by the master after --timeout; error: failed "
              "to boot or exited with an error; max_requests: recycled.",
              [Query(f"sum by (reason) (increase(gunicorn_worker_exits_total{{{SELECTOR}}}"
                     f"[{RATE}]))", "{{reason}}")], "short", stacked=True, colors=EXIT_COLORS),
        graph("Reloads and restarts", "HUP reloads, master restarts (a new start time) and "
              "worker spawns within each point's rate window (at least four scrapes).",
              [Query(f"sum by (instance) (increase(gunicorn_reloads_total{{{SELECTOR}}}"
                     f"[{RATE}]))", "{{instance}} reloads"),
               Query(f"sum by (instance) (changes(gunicorn_master_start_time_seconds"
                     f"{{{SELECTOR}}}[{RATE}]))", "{{instance}} master restarts"),
               Query(f"sum by (instance) (increase(gunicorn_worker_spawns_total{{{SELECTOR}}}"
                     f"[{RATE}]))", "{{instance}} worker spawns")], "short"),
    ]


def resources() -> list[Any]:
    slot = "{{instance}} worker {{worker}}"
    return [
        graph("Memory per worker slot", "Resident memory of each worker (slot 0..N-1; a "
              "replacement worker takes its predecessor's slot).",
              [Query(gauge("gunicorn_worker_resident_memory_bytes", "instance, worker"), slot)],
              "bytes"),
        graph("CPU per worker slot", "CPU time per second of each worker slot (1 = one core).",
              [Query(rate("gunicorn_worker_cpu_seconds_total", "instance, worker"), slot)],
              "percentunit"),
        graph("Open files per worker slot", "Open file descriptors of each worker.",
              [Query(gauge("gunicorn_worker_open_fds", "instance, worker"), slot)], "short"),
    ]


def sizes() -> list[Any]:
    def p95(metric: str) -> list[Query]:
        return [Query(quantile(0.95, metric, "http_route"), "{{http_route}}")]

    return [
        graph("Bytes/s received and sent", "Request and response body bytes per second.",
              [Query(rate("http_server_request_body_size_bytes_sum"), "received"),
               Query(rate("http_server_response_body_size_bytes_sum"), "sent")], "Bps"),
        graph("Request body size p95 by route", "95th percentile of request body sizes "
              "(Content-Length; 0 when absent).",
              p95("http_server_request_body_size_bytes"), "bytes"),
        graph("Response body size p95 by route", "95th percentile of response body sizes.",
              p95("http_server_response_body_size_bytes"), "bytes"),
    ]


def exporter() -> list[Any]:
    return [
        single("Metrics endpoint", "Whether Prometheus could scrape each selected instance.",
               [Query(f"up{{{SELECTOR}}}", "{{instance}}")], "short",
               mappings={"0": ("DOWN", "red"), "1": ("UP", "green")},
               text_mode=common.BigValueTextMode.VALUE_AND_NAME),
        single("Master uptime", "Time since each gunicorn master started.",
               [Query(f"time() - gunicorn_master_start_time_seconds{{{SELECTOR}}}",
                      "{{instance}}")], "s"),
        single("Versions", "gunicorn version and worker class of each instance.",
               [Query(f"gunicorn_info{{{SELECTOR}}}",
                      "{{instance}}: gunicorn {{version}}, {{worker_class}}")], "none",
               text_mode=common.BigValueTextMode.NAME),
        graph("Scrape duration", "How long Prometheus took to scrape each metrics endpoint.",
              [Query(f"scrape_duration_seconds{{{SELECTOR}}}", "{{instance}}")], "s", width=6),
        # Totals, not increase(): a fault counter appears at its first fault, and
        # increase() needs a sample before it to see that one.
        graph("gunicorn-prom-ext faults", "Faults the package contained and logged once, "
              "by kind, since each master started (requests were served; some metrics may be "
              "missing). A step is a new fault.",
              [Query(gauge("gunicorn_prom_ext_faults_total", "instance, kind"),
                     "{{instance}} {{kind}}")], "short", width=6, no_value="0"),
    ]


SECTIONS = (
    ("Overview", overview),
    ("Traffic and errors", traffic),
    ("Latency", latency),
    ("Saturation", saturation),
    ("Workers", workers),
    ("Worker resources", resources),
    ("Request and response sizes", sizes),
    ("Exporter", exporter),
)


def variables() -> list[Any]:
    def label_variable(name: str, label: str, query: str) -> Any:
        return (
            dashboard_builders.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dashboard.VariableOption(selected=True, text="All", value="$__all"))
        )

    return [
        dashboard_builders.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_variable("job", "Job", "label_values(gunicorn_info, job)"),
        label_variable(
            "instance", "Instance", 'label_values(gunicorn_info{job=~"$job"}, instance)'
        ),
    ]


def build() -> dict[str, Any]:
    board = (
        dashboard_builders.Dashboard("Gunicorn")
        .uid(DASHBOARD_UID)
        .description("Gunicorn servers instrumented by gunicorn-prom-ext: traffic, errors, "
                     "latency, saturation, workers and the exporter's own health.")
        .tags(["gunicorn", "gunicorn-prom-ext", "prometheus"])
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .variables(variables())
    )
    panel_id = 0
    for title, section in SECTIONS:
        panel_id += 1
        board = board.with_row(row(title).id(panel_id))
        for panel in section():
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    built: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return built
