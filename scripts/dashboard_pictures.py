"""Draws the dashboard's main panels from a running Prometheus into PNG files (matplotlib).

The queries are the shipped dashboard's own (gunicorn_prom_ext/kit/dashboard.json), with
Grafana's variables substituted as Grafana would; the data is whatever that Prometheus
holds. docs/images/ was made this way from the demo:

    bash scripts/demo.sh                      # terminal 1; Prometheus on 127.0.0.1:9090
    .venv/bin/python scripts/demo_traffic.py drive http://127.0.0.1:8000 \\
        --requests 3000 --seconds 300 --concurrency 3   # terminal 2; meanwhile, once:
    #   a burst of slow requests, kill -9 of a worker, kill -HUP of the master
    .venv/bin/python scripts/dashboard_pictures.py --prometheus http://127.0.0.1:9090 \\
        --minutes 6 --out docs/images
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Panel title -> file name, in the order of the overview picture.
PANELS = {
    "Requests/s by route": "requests-by-route.png",
    "Latency p50 / p95 / p99": "latency-quantiles.png",
    "5xx ratio by route": "error-ratio-by-route.png",
    "In flight vs capacity": "in-flight-vs-capacity.png",
    "Listen backlog": "listen-backlog.png",
    "Worker exits by reason": "worker-exits-by-reason.png",
}
COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
          "#705da0", "#37872d", "#fade2a"]  # fmt: skip
NAMED = {"green": "#73bf69", "blue": "#5794f2", "orange": "#ff9830", "red": "#f2495c",
         "dark-red": "#c4162a"}  # fmt: skip


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> Any:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise SystemExit(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


def substitute(expr: str, job: str, instance: str, step: float, scrape: float) -> str:
    rate_interval = max(4 * scrape, step + scrape)  # Grafana's $__rate_interval
    return (
        expr.replace("$__rate_interval", f"{rate_interval:g}s")
        .replace("$__interval", f"{step:g}s")
        .replace("$job", job)
        .replace("$instance", instance)
    )


def legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or "(no route)"


def axis_formatter(unit: str) -> Any:
    from matplotlib.ticker import FuncFormatter

    def format_value(value: float, _: object) -> str:
        if unit == "percentunit":
            return f"{value * 100:.0f}%"
        if unit == "s":
            return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
        if unit == "bytes":
            return f"{value / 2**20:.0f} MiB" if value >= 2**20 else f"{value / 1024:.0f} KiB"
        if unit == "reqps":
            return f"{value:g} req/s"
        return f"{value:g}"

    return FuncFormatter(format_value)


def draw(axes: Any, panel: dict[str, Any], data: list[tuple[str, Any]], start: float) -> None:
    import matplotlib.dates as mdates

    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    colors = {
        override["matcher"]["options"]: NAMED.get(prop["value"]["fixedColor"], "#ccc")
        for override in panel["fieldConfig"].get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "color"
    }
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    fill = custom.get("fillOpacity", 10) / 100
    bottom: list[float] = []
    index = 0
    for template, result in data:
        for series in result:
            points = [(float(t), float(v)) for t, v in series["values"]]
            points = [(t, v) for t, v in points if math.isfinite(v)]
            if not points:
                continue
            name = legend(template, series["metric"])
            color = colors.get(name, COLORS[index % len(COLORS)])
            index += 1
            times = [datetime.fromtimestamp(t) for t, _ in points]
            values = [v for _, v in points]
            if stacked:  # stacked areas: each series on top of the previous ones
                if len(bottom) != len(values):
                    bottom = [0.0] * len(values)
                top = [b + v for b, v in zip(bottom, values, strict=True)]
                if any(values):
                    axes.fill_between(times, bottom, top, color=color, alpha=fill + 0.3,
                                      linewidth=1.2, label=name)  # fmt: skip
                bottom = top
            else:
                axes.plot(times, values, color=color, linewidth=1.4, label=name)
                axes.fill_between(times, values, color=color, alpha=fill)
    for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])[1:]:
        if panel["type"] == "timeseries" and step["value"] is not None:
            axes.axhline(step["value"], color=NAMED.get(step["color"], "#f2495c"),
                         linestyle="--", linewidth=0.9, alpha=0.8)  # fmt: skip
    axes.set_title(panel["title"], color="#d8d9da", fontsize=11, loc="left")
    axes.yaxis.set_major_formatter(axis_formatter(unit))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
    axes.set_xlim(datetime.fromtimestamp(start), None)
    axes.set_ylim(bottom=0)
    axes.grid(color="#2c3235", linewidth=0.6)
    axes.set_facecolor("#181b1f")
    axes.tick_params(colors="#9fa7b3", labelsize=8)
    for spine in axes.spines.values():
        spine.set_color("#2c3235")
    handles, _ = axes.get_legend_handles_labels()
    if handles:
        axes.legend(fontsize=7, facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da",
                    loc="best", ncol=2)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--job", default="shop")
    parser.add_argument("--instance", default=".*")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(REPO))
    from gunicorn_prom_ext.kit.render import dashboard_text, iter_panels

    panels = {p["title"]: p for p in iter_panels(json.loads(dashboard_text()))}
    end = time.time()
    start = end - args.minutes * 60
    step = max(args.scrape_interval, round((end - start) / 300))
    fetched: dict[str, list[tuple[str, Any]]] = {}
    for title in PANELS:
        fetched[title] = [
            (target["legendFormat"], query_range(
                args.prometheus,
                substitute(target["expr"], args.job, args.instance, step, args.scrape_interval),
                start, end, step,
            ))
            for target in panels[title]["targets"]
        ]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"figure.facecolor": "#111217", "font.family": "DejaVu Sans"})
    for title, name in PANELS.items():
        figure, axes = plt.subplots(figsize=(7, 3.2), dpi=110)
        draw(axes, panels[title], fetched[title], start)
        figure.tight_layout()
        figure.savefig(args.out / name)
        plt.close(figure)
        print(f"wrote {args.out / name}")
    figure, grid = plt.subplots(3, 2, figsize=(13, 10), dpi=100)
    for axes, title in zip(grid.flat, PANELS, strict=True):
        draw(axes, panels[title], fetched[title], start)
    figure.suptitle("gunicorn-prom-ext dashboard (the demo, real data)", color="#d8d9da")
    figure.tight_layout()
    figure.savefig(args.out / "dashboard-overview.png")
    print(f"wrote {args.out / 'dashboard-overview.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
