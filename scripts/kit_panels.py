"""Panel builders for the operator kit's dashboard (grafana-foundation-sdk), one style."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.models import common, dashboard

DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every panel query is scoped to the selected jobs and instances.
SELECTOR = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Step:
    """A threshold: from ``value`` on (None: from the bottom), this colour."""

    value: float | None
    color: str


def _targets(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    targets = []
    for ref_id, query in zip("ABCDEFGH", queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref_id).datasource(DATASOURCE)
        targets.append(target.legend_format(query.legend or "__auto"))
    return targets


def _thresholds(steps: Sequence[Step]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=step.value, color=step.color) for step in steps])
    )


def graph(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    width: int = 8,
    height: int = 8,
    steps: Sequence[Step] = (),
    stacked: bool = False,
    colors: dict[str, str] | None = None,
    minimum: float | None = 0,
    no_value: str | None = None,
) -> timeseries.Panel:
    """A time series panel; ``steps`` are drawn as dashed threshold lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))  # type: ignore[arg-type]
        .unit(unit)
        .span(width)
        .height(height)
        .fill_opacity(30 if stacked else 10)
        .line_width(1)
        .show_points(common.VisibilityMode.NEVER)
        .draw_style(common.GraphDrawStyle.LINE)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if steps:
        panel = panel.thresholds(_thresholds(steps)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    for name, color in (colors or {}).items():
        fixed = {"mode": "fixed", "fixedColor": color}
        panel = panel.override_by_name(name, [dashboard.DynamicConfigValue("color", fixed)])
    if no_value is not None:
        panel = panel.no_value(no_value)
    return panel


def single(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    width: int = 4,
    height: int = 4,
    steps: Sequence[Step] = (Step(None, "green"),),
    text_mode: common.BigValueTextMode = common.BigValueTextMode.AUTO,
    mappings: dict[str, tuple[str, str]] | None = None,
    decimals: int | None = None,
) -> stat.Panel:
    """A stat panel showing the last value; ``mappings`` turns values into (text, colour)."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))  # type: ignore[arg-type]
        .unit(unit)
        .span(width)
        .height(height)
        .thresholds(_thresholds(steps))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .text_mode(text_mode)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    if mappings:
        options = {
            value: dashboard.ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(mappings.items())
        }
        panel = panel.mappings([dashboard.ValueMap(options=options)])
    return panel


def row(title: str) -> dashboard_builders.Row:
    return dashboard_builders.Row(title)
