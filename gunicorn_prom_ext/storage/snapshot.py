"""The snapshot an instance pushes to Redis: its JSON form, and the strict reading of it.

Anything with write access to Redis can put a value under the key prefix, so the sidecar
trusts nothing it reads: a snapshot is served only if all of it is what a pusher of this
version could have sent (the families rules are in snapshot_checks.py), so that the page
stays a valid exposition in both text formats (the Prometheus text format, and OpenMetrics,
which Prometheus asks for). Otherwise ``SnapshotError`` says what is wrong, and where.

Imported only once the multiprocess directory is set (it imports prometheus_client).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from gunicorn_prom_ext.storage.snapshot_checks import check_family, exposed_names

FORMAT_VERSION = 1
# The largest snapshot read: a real one takes 100 to 300 bytes per series, so this is some
# 50,000 series or more; beyond it one instance would cost the sidecar seconds to check.
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
_FIELDS = ("v", "epoch", "seq", "id", "families")
_OPTIONAL_FIELDS = ("owner",)
# Longer integers are not counts anyone pushes (a float overflows at 309 digits); refusing
# them before int() keeps a hostile blob from costing quadratic time.
_MAX_INT_DIGITS = 320
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SURROGATE = re.compile("[\ud800-\udfff]")


class SnapshotError(ValueError):
    """A snapshot this version cannot serve; the message says what and where."""


@dataclass(frozen=True)
class Snapshot:
    prefix: str
    instance_id: str
    families: list[Metric]


def serialise(
    families: Iterable[Metric], instance_id: str, epoch: int, seq: int, owner: str = ""
) -> bytes:
    """Compact JSON of the families: name, type, help, unit and (name, labels, value) samples.

    (epoch, seq, owner) order the snapshots of one instance id: epoch is its master's start
    time in milliseconds (a restarted master with a configured id starts a new one), seq
    counts its pushes and owner tells two masters apart that started in the same
    millisecond. The push script reads them from the start of the blob, so the key order
    here is fixed. Timestamps and exemplars are dropped: nothing this package exposes has
    them.
    """
    document: dict[str, object] = {"v": FORMAT_VERSION, "epoch": epoch, "seq": seq}
    if owner:
        document["owner"] = owner
    document["id"] = instance_id
    document["families"] = [_family_json(f) for f in families]
    # json writes +Inf/NaN as Infinity/NaN, which the reader accepts (and nothing else).
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _family_json(f: Metric) -> list[object]:
    samples = [[s.name, s.labels, s.value] for s in f.samples]
    return [f.name, f.type, f.documentation, f.unit, samples]


def deserialise(blob: bytes, instance_id: str | None = None) -> list[Metric]:
    """The families of a snapshot, checked whole; SnapshotError if any of it is wrong.

    With ``instance_id``, the snapshot must also say it is that instance's (a snapshot
    copied to another instance's key would otherwise be served twice).
    """
    if len(blob) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"{len(blob)} bytes, more than the {MAX_SNAPSHOT_BYTES} read")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"not UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError:
        raise SnapshotError("JSON nested too deep") from None
    except SnapshotError:
        raise
    except ValueError as exc:
        raise SnapshotError(f"not JSON ({exc})") from None
    return _document(document, instance_id)


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS:
        raise SnapshotError(f"a number of {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    # Infinity is spelt Infinity (the serialiser's way); 1e999 is a mistake, not +Inf.
    value = float(text)
    if math.isinf(value):
        raise SnapshotError(f"number {text[:40]} out of range")
    return value


def _document(document: object, instance_id: str | None) -> list[Metric]:
    if not isinstance(document, dict):
        raise SnapshotError(f"{_kind(document)}, expected a JSON object")
    version = document.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise SnapshotError(f"format version {_show(version)}, expected {FORMAT_VERSION}")
    unknown = [k for k in document if k not in _FIELDS + _OPTIONAL_FIELDS]
    missing = [k for k in _FIELDS if k not in document]
    if unknown or missing:
        fields = repr(sorted(document)[:10])[:200]
        raise SnapshotError(f"fields {fields}, expected {list(_FIELDS)!r}")
    for field in ("epoch", "seq"):
        value = document[field]
        if type(value) is not int or value < 0:
            raise SnapshotError(f"{field} is {_show(value)}, expected a whole number")
    owner = document.get("owner", "")
    if not isinstance(owner, str):
        raise SnapshotError(f"owner is {_show(owner)}, expected a string")
    stated = document["id"]
    if not isinstance(stated, str):
        raise SnapshotError(f"id is {_show(stated)}, expected a string")
    if instance_id is not None and stated != instance_id:
        raise SnapshotError(f"the snapshot of instance {stated!r}, not of {instance_id!r}")
    raw_families = document["families"]
    if not isinstance(raw_families, list):
        raise SnapshotError(f"families is {_kind(raw_families)}, expected a list")
    families: list[Metric] = []
    owners: dict[str, int] = {}  # every name a family's samples use -> that family
    for index, raw in enumerate(raw_families):
        try:
            family = _family(raw)
            for name in exposed_names(family.name, family.type):
                other = owners.setdefault(name, index)
                if other != index:
                    raise SnapshotError(
                        f"its samples' name {name} is also family {other}'s "
                        f"({families[other].name})"
                    )
        except SnapshotError as exc:
            raise SnapshotError(f"family {_family_label(raw, index)}: {exc}") from None
        families.append(family)
    return families


def _family(raw: object) -> Metric:
    if not isinstance(raw, list) or len(raw) != 5:
        raise SnapshotError(f"{_kind(raw)}, expected [name, type, help, unit, samples]")
    name, kind, documentation, unit, samples = raw
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        raise SnapshotError(f"name {_show(name)} is not a Prometheus metric name")
    if kind not in _TYPES:
        raise SnapshotError(f"type {_show(kind)}, expected one of {', '.join(_TYPES)}")
    if not isinstance(documentation, str) or not _utf8(documentation):
        raise SnapshotError(f"help is {_show(documentation)}, expected UTF-8 text")
    if not isinstance(unit, str) or (unit and not name.endswith("_" + unit)):
        raise SnapshotError(f"unit {_show(unit)}: expected one the name ends with, or ''")
    if unit and kind in ("info", "stateset"):
        raise SnapshotError(f"a unit ({unit!r}) on a {kind}")
    if not isinstance(samples, list):
        raise SnapshotError(f"samples is {_kind(samples)}, expected a list")
    family = Metric(name, documentation, kind, unit)
    label_names: set[str] = set()  # checked already: a family has few, on every sample
    for index, sample in enumerate(samples):
        try:
            sample_name, labels, value = _sample(sample, label_names)
        except SnapshotError as exc:
            raise SnapshotError(f"sample {index}: {exc}") from None
        family.add_sample(sample_name, labels, value)
    try:
        check_family(family)
    except ValueError as exc:
        raise SnapshotError(str(exc)) from None
    return family


def _sample(raw: object, label_names: set[str]) -> tuple[str, dict[str, str], float]:
    if not isinstance(raw, list) or len(raw) != 3:
        raise SnapshotError(f"{_kind(raw)}, expected [name, labels, value]")
    name, labels, value = raw
    if not isinstance(name, str):
        raise SnapshotError(f"name {_show(name)}, expected a string")
    if not isinstance(labels, dict):
        raise SnapshotError(f"labels are {_kind(labels)}, expected an object")
    for label, label_value in labels.items():
        if label not in label_names:
            if not LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise SnapshotError(f"label {_show(label)} is not a Prometheus label name")
            label_names.add(label)
        if not isinstance(label_value, str) or not _utf8(label_value):
            raise SnapshotError(f"label {label} is {_show(label_value)}, expected UTF-8 text")
    if type(value) is float:
        return name, labels, value
    if type(value) is not int:  # bool is an int, but not a value
        raise SnapshotError(f"value {_show(value)}, expected a number")
    try:
        return name, labels, float(value)
    except OverflowError:
        raise SnapshotError("value out of range") from None


_TYPES = ("counter", "gauge", "summary", "histogram", "gaugehistogram", "unknown", "info",
          "stateset")  # fmt: skip


def _utf8(text: str) -> bool:
    # Only JSON's \ud800-style escapes make a str that UTF-8 cannot encode.
    return text.isascii() or _SURROGATE.search(text) is None


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A value for an error message: short, whatever it is."""
    if isinstance(value, (dict, list)):
        return _kind(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _family_label(raw: object, index: int) -> str:
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        return f"{index} ({_show(raw[0])})"
    return str(index)
