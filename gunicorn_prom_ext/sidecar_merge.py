"""The sidecar's page: every instance's families merged into one valid exposition.

Each family is exposed once, with every sample labelled by its instance (and service), in a
fixed order (by service, then instance). A family that cannot join the page is left out
for that instance only and reported as a ``Conflict``: its type differs from the family
already served under that name (an instance on another version, say), or one of the names
its samples take is another family's (a gauge ``x_total`` next to a counter ``x``) or the
sidecar's own. Help and unit are the first instance's; a difference there changes no value.

A label the sidecar adds that a snapshot already has is kept as ``exported_<label>`` (as
Prometheus does with target labels), so no two series become one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from gunicorn_prom_ext.storage.redis import INSTANCE_LABEL, SERVICE_LABEL
from gunicorn_prom_ext.storage.snapshot import Snapshot
from gunicorn_prom_ext.storage.snapshot_checks import exposed_names


@dataclass(frozen=True)
class Conflict:
    snapshot: Snapshot
    family: str
    reason: str


@dataclass(frozen=True)
class _Owner:
    family: str
    kind: str
    source: str


def merge_snapshots(
    snapshots: Iterable[Snapshot], *, with_service: bool, reserved: Iterable[Metric] = ()
) -> tuple[list[Metric], list[Conflict]]:
    """(every family once, each sample labelled; the families left out, and why).

    ``reserved`` families (the sidecar's own) keep their names: no snapshot may use them.
    """
    owners: dict[str, _Owner] = {}
    for family in reserved:
        for name in exposed_names(family.name, family.type):
            owners[name] = _Owner(family.name, family.type, "the sidecar's own")
    merged: dict[str, Metric] = {}
    conflicts: list[Conflict] = []
    for snap in sorted(snapshots, key=lambda s: (s.prefix, s.instance_id)):
        extra = {INSTANCE_LABEL: snap.instance_id}
        if with_service:
            extra[SERVICE_LABEL] = snap.prefix
        source = f"instance {snap.instance_id!r}"
        for family in snap.families:
            target = merged.get(family.name)
            reason = _clash(family, target, owners, extra)
            if reason is not None:
                conflicts.append(Conflict(snap, family.name, reason))
                continue
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = target
                for name in exposed_names(family.name, family.type):
                    owners[name] = _Owner(family.name, family.type, source)
            renames = _renames(family, extra)
            for sample in family.samples:
                labels = sample.labels
                if renames:
                    labels = {renames.get(k, k): v for k, v in labels.items()}
                target.add_sample(sample.name, {**labels, **extra}, sample.value)
    return list(merged.values()), conflicts


def _clash(
    family: Metric, target: Metric | None, owners: dict[str, _Owner], extra: dict[str, str]
) -> str | None:
    """Why ``family`` cannot join the page (None if it can)."""
    if target is not None:
        if target.type == family.type:
            return None
        owner = owners[family.name]
        return f"a {family.type} here, but a {owner.kind} in {owner.source}, served first"
    for name in exposed_names(family.name, family.type):
        taken = owners.get(name)
        if taken is not None:
            return f"its name {name} is taken by {taken.kind} {taken.family} ({taken.source})"
    if family.type == "stateset" and family.name in extra:
        return f"a stateset whose states are in the {family.name} label the sidecar adds"
    return None


def _renames(family: Metric, extra: dict[str, str]) -> dict[str, str]:
    """Labels of the family that the sidecar adds -> exported_<label>, unused in the family."""
    present = {name for sample in family.samples for name in sample.labels}
    renames = {}
    for name in extra:
        if name in present:
            moved = "exported_" + name
            while moved in present:
                moved = "exported_" + moved
            renames[name] = moved
    return renames
