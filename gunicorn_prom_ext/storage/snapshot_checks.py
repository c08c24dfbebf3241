"""What makes a metric family servable: the rules of the exposition formats, per type.

A prometheus_client registry only ever produces families that keep these rules; a family
read from Redis may come from anywhere, and one that breaks them would make the whole page
invalid (Prometheus drops a scrape it cannot parse). The rules are OpenMetrics' (the
format Prometheus asks for), as prometheus_client's own OpenMetrics parser enforces them,
plus the names each type's samples take in either text format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

# The sample names of a family of each type, as suffixes of the family's name. The text
# format (0.0.4) also shows a counter as <name>_total, an info as <name>_info, and the
# _created, _gsum and _gcount samples as gauges of those names: every one of them is a name
# the family takes, so no other family may have it.
SAMPLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "unknown": ("",),
    "stateset": ("",),
    "info": ("_info",),
    "summary": ("", "_count", "_sum", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
}
_COUNTER_LIKE = ("_total", "_sum", "_count", "_bucket", "_gcount", "_gsum")
_WHOLE_NUMBERS = ("_bucket", "_count", "_gcount")
# How Go and OpenMetrics write a number (le, quantile): no spaces, underscores or "nan".
_NUMBER = re.compile(r"[+-]?(?:Inf|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)")


def exposed_names(name: str, kind: str) -> Iterator[str]:
    """Every name the family ``name`` of type ``kind`` uses, its own included."""
    yield name
    for suffix in SAMPLE_SUFFIXES[kind]:
        if suffix:
            yield name + suffix


def check_family(family: Metric) -> None:
    """ValueError (naming the sample) unless the family keeps the formats' rules."""
    suffixes = {family.name + s: s for s in SAMPLE_SUFFIXES[family.type]}
    groups: set[frozenset[tuple[str, str]]] = set()
    group: frozenset[tuple[str, str]] | None = None
    for index, sample in enumerate(family.samples):
        suffix = suffixes.get(sample.name)
        if suffix is None:
            raise ValueError(
                f"sample {index}: {sample.name[:80]} is not a sample name of {family.type} "
                f"{family.name} ({', '.join(suffixes)})"
            )
        try:
            _check_sample(family, sample, suffix)
        except ValueError as exc:
            raise ValueError(f"sample {index} ({sample.name}): {exc}") from None
        # The samples of one label set (a histogram's buckets, count and sum, say) must be
        # consecutive; their order is the only grouping the text formats have.
        current = _group(family, sample, suffix)
        if current != group:
            if current in groups:
                raise ValueError(f"sample {index} ({sample.name}): its label set came earlier")
            groups.add(current)
            group = current
    if family.type in ("histogram", "gaugehistogram"):
        _check_histograms(family)


def _check_sample(family: Metric, sample: Sample, suffix: str) -> None:
    value, labels = sample.value, sample.labels
    if suffix in _COUNTER_LIKE:
        if math.isnan(value):
            raise ValueError("NaN in a count or sum")
        if value < 0 and suffix != "_gsum":
            raise ValueError(f"{value} in a count or sum, which cannot be negative")
    if suffix in _WHOLE_NUMBERS and not value.is_integer():
        raise ValueError(f"{value} where a whole number is expected")
    if suffix == "_bucket":
        bound = _number_label(labels, "le")
        if math.isnan(bound):
            raise ValueError("bucket bound NaN")
    if family.type == "summary" and suffix == "":
        quantile = _number_label(labels, "quantile")
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile {labels['quantile']}, expected 0 to 1")
        if value < 0:
            raise ValueError(f"quantile value {value} is negative")
    if family.type == "stateset":
        if family.name not in labels:
            raise ValueError(f"a stateset sample without its {family.name} label")
        if value not in (0.0, 1.0):
            raise ValueError(f"stateset value {value}, expected 0 or 1")
    if family.type == "info" and value != 1.0:
        raise ValueError(f"info value {value}, expected 1")


def _number_label(labels: dict[str, str], name: str) -> float:
    text = labels.get(name)
    if text is None:
        raise ValueError(f"no {name} label")
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{name}={text[:40]!r} is not a number")
    number = float(text)
    if math.isinf(number) and text != ("+Inf" if number > 0 else "-Inf"):
        raise ValueError(f"{name}={text!r}, expected {'+Inf' if number > 0 else '-Inf'}")
    return number


def _group(family: Metric, sample: Sample, suffix: str) -> frozenset[tuple[str, str]]:
    """The label set a sample belongs to, without the label that varies inside it."""
    labels = sample.labels
    if family.type == "info":
        return frozenset()
    apart = {"summary": "quantile" if suffix == "" else None, "stateset": family.name,
             "histogram": "le" if suffix == "_bucket" else None,
             "gaugehistogram": "le" if suffix == "_bucket" else None}.get(family.type)  # fmt: skip
    return frozenset((k, v) for k, v in labels.items() if k != apart)


def _check_histograms(family: Metric) -> None:
    """Per label set: buckets in order, cumulative, ending at +Inf; count as +Inf's."""
    by_group: dict[frozenset[tuple[str, str]], list[tuple[str, Sample]]] = {}
    for sample in family.samples:
        suffix = sample.name[len(family.name) :]
        by_group.setdefault(_group(family, sample, suffix), []).append((suffix, sample))
    for members in by_group.values():
        bound = count = None
        cumulative = 0.0
        has_sum = has_gsum = negative_bounds = negative_gsum = False
        for suffix, sample in members:
            if suffix == "_bucket":
                b = float(sample.labels["le"])
                if bound is not None and b <= bound:
                    raise ValueError(f"bucket le={sample.labels['le']} out of order")
                if sample.value < cumulative:
                    raise ValueError(f"bucket le={sample.labels['le']} below the one before")
                bound, cumulative = b, sample.value
                negative_bounds = negative_bounds or b < 0
            elif suffix in ("_count", "_gcount"):
                count = sample.value
            elif suffix == "_sum":
                has_sum = True
            elif suffix == "_gsum":
                has_gsum, negative_gsum = True, sample.value < 0
        labels = dict(members[0][1].labels)
        labels.pop("le", None)
        where = f"{family.name}{labels}"
        if bound != math.inf:
            raise ValueError(f"{where}: no +Inf bucket")
        if count is not None and count != cumulative:
            raise ValueError(f"{where}: count {count}, but the +Inf bucket holds {cumulative}")
        if (has_sum or has_gsum) != (count is not None):
            raise ValueError(f"{where}: a count without a sum, or a sum without a count")
        if negative_bounds and has_sum:
            raise ValueError(f"{where}: a sum, with negative bucket bounds")
        if negative_gsum and not negative_bounds:
            raise ValueError(f"{where}: a negative gsum without negative bucket bounds")
