"""What makes a metric family servable: the rules of the exposition formats, per type.

A family read from Redis may come from anywhere, and one that breaks the formats' rules
would make the whole page invalid. The rule kept here: a family is served if this package's
pusher could have sent it (prometheus_client's multiprocess collector and the master's own
collector): its names and labels are the formats', its samples the ones its type has, with
the labels they need (a bucket's ``le``, a quantile's ``quantile``), and a histogram's
buckets are what a histogram counts (in order, cumulative, whole numbers, ending at +Inf,
with the count equal to the last). Values are served as the instance reported them: a NaN
or negative sum is the application's (prometheus_client lets it observe one), not a broken
snapshot. Samples of one label set are put together (older prometheus_client versions
list a histogram's sums first), as OpenMetrics wants them.
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
    """ValueError (naming the sample) unless the family keeps the rules; puts the samples
    of each label set together."""
    suffixes = {family.name + s: s for s in SAMPLE_SUFFIXES[family.type]}
    # The label that varies inside a label set, by sample name (a bucket's le, say).
    apart = {name: _apart(family, suffix) for name, suffix in suffixes.items()}
    groups: dict[frozenset[tuple[str, str]], list[Sample]] = {}
    scattered = False
    group: frozenset[tuple[str, str]] | None = None
    series: set[tuple[str, frozenset[tuple[str, str]], str | None]] = set()
    numbers: dict[str, float] = {}  # le and quantile values read already
    for index, sample in enumerate(family.samples):
        suffix = suffixes.get(sample.name)
        if suffix is None:
            raise ValueError(
                f"sample {index}: {sample.name[:80]!r} is not a sample name of {family.type} "
                f"{family.name} ({', '.join(suffixes)})"
            )
        try:
            _check_sample(family, sample, suffix, numbers)
        except ValueError as exc:
            raise ValueError(f"sample {index} ({sample.name}): {exc}") from None
        varies = apart[sample.name]
        labels = sample.labels
        if varies is None:
            current = frozenset(labels.items())
        else:
            current = frozenset(item for item in labels.items() if item[0] != varies)
        one = (sample.name, current, labels.get(varies) if varies else None)
        if one in series:
            raise ValueError(f"sample {index}: {(repr(sample.name) + repr(labels))[:120]} "
                             "appears twice")  # fmt: skip
        series.add(one)
        if family.type == "info":
            current = frozenset()  # an info's samples are one set, whatever their labels
        members = groups.setdefault(current, [])
        scattered = scattered or (bool(members) and current != group)
        members.append(sample)
        group = current
    if scattered:
        family.samples = [sample for members in groups.values() for sample in members]
    if family.type in ("histogram", "gaugehistogram"):
        for members in groups.values():
            _check_histogram(family, members)


def _check_sample(
    family: Metric, sample: Sample, suffix: str, numbers: dict[str, float]
) -> None:
    value, labels = sample.value, sample.labels
    if suffix in _WHOLE_NUMBERS and not value.is_integer():
        raise ValueError(f"{value} where a whole number is expected")
    if suffix == "_bucket":
        bound = _number_label(labels, "le", numbers)
        if math.isnan(bound):
            raise ValueError("bucket bound NaN")
    if family.type == "summary" and suffix == "":
        quantile = _number_label(labels, "quantile", numbers)
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile {labels['quantile']}, expected 0 to 1")
    if family.type == "stateset":
        if family.name not in labels:
            raise ValueError(f"a stateset sample without its {family.name} label")
        if value not in (0.0, 1.0):
            raise ValueError(f"stateset value {value}, expected 0 or 1")
    if family.type == "info" and value != 1.0:
        raise ValueError(f"info value {value}, expected 1")


def _number_label(labels: dict[str, str], name: str, numbers: dict[str, float]) -> float:
    text = labels.get(name)
    if text is None:
        raise ValueError(f"no {name} label")
    known = numbers.get(text)
    if known is not None:
        return known
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{name}={text[:40]!r} is not a number")
    number = float(text)
    if math.isinf(number) and text != ("+Inf" if number > 0 else "-Inf"):
        raise ValueError(f"{name}={text!r}, expected {'+Inf' if number > 0 else '-Inf'}")
    numbers[text] = number
    return number


def _apart(family: Metric, suffix: str) -> str | None:
    """The label whose values make one label set's samples differ (None if none does)."""
    if family.type == "summary" and suffix == "":
        return "quantile"
    if family.type == "stateset":
        return family.name
    if family.type in ("histogram", "gaugehistogram") and suffix == "_bucket":
        return "le"
    return None


def _check_histogram(family: Metric, members: list[Sample]) -> None:
    """One label set's samples: buckets in order, cumulative, ending at +Inf; the count
    (if any) what the +Inf bucket holds."""
    bound = count = None
    cumulative = 0.0
    for sample in members:
        suffix = sample.name[len(family.name) :]
        if suffix == "_bucket":
            b = float(sample.labels["le"])
            if bound is not None and b <= bound:
                raise ValueError(f"bucket le={sample.labels['le']} out of order")
            if sample.value < cumulative:
                raise ValueError(f"bucket le={sample.labels['le']} below the one before")
            bound, cumulative = b, sample.value
        elif suffix in ("_count", "_gcount"):
            count = sample.value
    labels = {k: v for k, v in members[0].labels.items() if k != "le"}
    if bound != math.inf:
        raise ValueError(f"{family.name}{labels}: no +Inf bucket")
    if count is not None and count != cumulative:
        raise ValueError(f"{family.name}{labels}: count {count}, but the +Inf bucket holds "
                         f"{cumulative}")  # fmt: skip
