"""The snapshot format read strictly, the sidecar's merge, and its bookkeeping: pure code,
real prometheus_client registries, real threads."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.metrics_core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

from gunicorn_prom_ext.sidecar_merge import merge_snapshots
from gunicorn_prom_ext.sidecar_problems import JoinedReadFailed, ProblemLog, Round, Shared
from gunicorn_prom_ext.storage.snapshot import (
    MAX_SNAPSHOT_BYTES,
    Snapshot,
    SnapshotError,
    deserialise,
    serialise,
)

NAN, INF = float("nan"), float("inf")


class Fixed(Collector):
    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return list(self._families)


def registry_of_every_type() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    Counter("reqs", "Requests.", ["route"], registry=registry).labels("/").inc(3)
    Counter("odd", "A counter told NaN.", registry=registry).inc(NAN)
    Gauge("temp_celsius", "Temp.", unit="celsius", registry=registry).set(-INF)
    summary = Summary("size_bytes", "Sizes.", ["m"], registry=registry)
    summary.labels("GET").observe(-3)  # a negative sum is the application's business
    histogram = Histogram("delta", "Deltas.", ["m"], buckets=[-1, 0, 1], registry=registry)
    histogram.labels("GET").observe(-5)
    histogram.labels("PUT").observe(NAN)  # counted in no bucket, sum NaN
    Info("build", "Build.", registry=registry).info({"version": "1.2"})
    Enum("state", "State.", states=["up", "down"], registry=registry).state("down")
    gh = GaugeHistogramMetricFamily("queue", "Queue.", labels=["q"])
    gh.add_metric(["a"], [("1.0", 2.0), ("+Inf", 3.0)], gsum_value=-1.5)
    quantiles = SummaryMetricFamily("rpc", "RPC.", count_value=4, sum_value=2.0)
    quantiles.add_sample("rpc", {"quantile": "0.5"}, -0.1)
    registry.register(Fixed(
        gh, quantiles, UnknownMetricFamily("legacy", "Legacy.", value=NAN),
        InfoMetricFamily("host", "Host.", value={"name": "web-1"}),
        StateSetMetricFamily("mode", "Mode.", value={"fast": True, "slow": False}),
    ))  # fmt: skip
    return registry


def test_every_type_a_registry_can_produce_is_read_back() -> None:
    families = list(registry_of_every_type().collect())
    read = deserialise(serialise(families, "web-1", 1_700_000_000_000, 3, "h:1:ab"), "web-1")
    assert [(f.name, f.type, f.documentation, f.unit) for f in read] == [
        (f.name, f.type, f.documentation, f.unit) for f in families
    ]
    for got, sent in zip(read, families, strict=True):
        assert [(s.name, s.labels) for s in got.samples] == [
            (s.name, s.labels) for s in sent.samples
        ]
        for g, s in zip(got.samples, sent.samples, strict=True):
            assert json.dumps(g.value) == json.dumps(float(s.value))  # NaN is NaN too


def test_samples_of_one_label_set_are_put_together() -> None:
    """prometheus_client before 0.22 listed every _sum of a histogram first."""
    scattered = ["h", "histogram", "H.", "", [
        ["h_sum", {"m": "a"}, 1.0], ["h_sum", {"m": "b"}, 2.0],
        ["h_bucket", {"m": "a", "le": "+Inf"}, 1.0], ["h_count", {"m": "a"}, 1.0],
        ["h_bucket", {"m": "b", "le": "+Inf"}, 2.0], ["h_count", {"m": "b"}, 2.0],
    ]]  # fmt: skip
    (family,) = deserialise(document([scattered]))
    assert [(s.name, s.labels["m"]) for s in family.samples] == [
        ("h_sum", "a"), ("h_bucket", "a"), ("h_count", "a"),
        ("h_sum", "b"), ("h_bucket", "b"), ("h_count", "b"),
    ]  # fmt: skip


def document(families: object, **fields: object) -> bytes:
    doc = {"v": 1, "epoch": 1, "seq": 1, "id": "i", "families": families, **fields}
    return json.dumps(doc, separators=(",", ":")).encode()


def histogram(*samples: list[object]) -> bytes:
    return document([["h", "histogram", "H.", "", list(samples)]])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "not JSON (Expecting value: line 1 column 1 (char 0))"),
        (b"[]", "a list, expected a JSON object"),
        (document([], v=True), "format version True, expected 1"),
        (document([], extra=1), "fields ['epoch', 'extra', 'families', 'id', 'seq', 'v'], "
                                "expected ['v', 'epoch', 'seq', 'id', 'families']"),
        (document([], epoch=-1), "epoch is -1, expected a whole number"),
        (document([], seq=1.5), "seq is 1.5, expected a whole number"),
        (document([], owner=3), "owner is 3, expected a string"),
        (document([], id=None), "id is None, expected a string"),
        (document([["x", "gauge", "X", "", []]] * 2),
         "family 1 ('x'): its samples' name x is also family 0's (x)"),
        (document([["x_seconds", "gauge", "X", "ms", []]]),
         "family 0 ('x_seconds'): unit 'ms': expected one the name ends with, or ''"),
        (document([["x_info", "info", "X", "info", []]]),
         "family 0 ('x_info'): a unit ('info') on a info"),
        (document([["x", "gauge", 7, "", []]]), "family 0 ('x'): help is 7, expected UTF-8 text"),
        (document([["x", "gauge", "X", "", [["x", {}, 1.0, 5]]]]),
         "family 0 ('x'): sample 0: a list, expected [name, labels, value]"),
        (document([["x", "gauge", "X", "", [["x", {"a": "b" * 100}, None]]]]),
         "family 0 ('x'): sample 0: value None, expected a number"),
        (histogram(["h_bucket", {}, 1.0]),
         "family 0 ('h'): sample 0 (h_bucket): no le label"),
        (histogram(["h_bucket", {"le": " 1"}, 1.0]),
         "family 0 ('h'): sample 0 (h_bucket): le=' 1' is not a number"),
        (histogram(["h_bucket", {"le": "Inf"}, 1.0]),
         "family 0 ('h'): sample 0 (h_bucket): le='Inf', expected +Inf"),
        (histogram(["h_bucket", {"le": "+Inf"}, 1.5]),
         "family 0 ('h'): sample 0 (h_bucket): 1.5 where a whole number is expected"),
        (histogram(["h_bucket", {"le": "2"}, 1.0], ["h_bucket", {"le": "1"}, 1.0]),
         "family 0 ('h'): bucket le=1 out of order"),
        (histogram(["h_bucket", {"le": "1"}, 2.0], ["h_bucket", {"le": "+Inf"}, 1.0]),
         "family 0 ('h'): bucket le=+Inf below the one before"),
        (histogram(["h_bucket", {"le": "+Inf"}, 2.0], ["h_count", {}, 3.0]),
         "family 0 ('h'): h{}: count 3.0, but the +Inf bucket holds 2.0"),
        (document([["s", "summary", "S", "", [["s", {"quantile": "2"}, 1.0]]]]),
         "family 0 ('s'): sample 0 (s): quantile 2, expected 0 to 1"),
        (document([["m", "stateset", "M", "", [["m", {"m": "a"}, 2.0]]]]),
         "family 0 ('m'): sample 0 (m): stateset value 2.0, expected 0 or 1"),
        (document([["m", "stateset", "M", "", [["m", {}, 1.0]]]]),
         "family 0 ('m'): sample 0 (m): a stateset sample without its m label"),
        (document([["b", "info", "B", "", [["b_info", {}, 2.0]]]]),
         "family 0 ('b'): sample 0 (b_info): info value 2.0, expected 1"),
        (document([["c", "counter", "C", "", [["c", {}, 1.0]]]]),
         "family 0 ('c'): sample 0: 'c' is not a sample name of counter c (c_total, c_created)"),
    ],
)  # fmt: skip
def test_what_is_wrong_is_said_exactly(blob: bytes, message: str) -> None:
    with pytest.raises(SnapshotError) as caught:
        deserialise(blob)
    assert str(caught.value) == message


def test_limits() -> None:
    blob = document([["x", "gauge", "x" * MAX_SNAPSHOT_BYTES, "", []]])
    with pytest.raises(SnapshotError, match=rf"^{len(blob)} bytes, more than the 16777216 read$"):
        deserialise(blob)
    for depth in (1000, 100_000):  # below and far beyond the recursion limit
        with pytest.raises(SnapshotError, match=r"^(JSON nested too deep|a list, expected)"):
            deserialise(b"[" * depth + b"]" * depth)


def snap(instance_id: str, *families: Metric, prefix: str = "svc") -> Snapshot:
    return Snapshot(prefix, instance_id, list(families))


def test_labels_the_sidecar_adds_are_kept_as_exported() -> None:
    g = GaugeMetricFamily("g", "G.", labels=["gunicorn_instance", "exported_gunicorn_instance"])
    g.add_metric(["fake", "x"], 1.0)
    g.add_metric(["", "y"], 2.0)
    merged, conflicts = merge_snapshots([snap("a", g)], with_service=False)
    assert conflicts == []
    assert [s.labels for s in merged[0].samples] == [
        {"exported_exported_gunicorn_instance": "fake", "exported_gunicorn_instance": "x",
         "gunicorn_instance": "a"},
        {"exported_exported_gunicorn_instance": "", "exported_gunicorn_instance": "y",
         "gunicorn_instance": "a"},
    ]  # fmt: skip
    # A label the sidecar does not add in this mode is the instance's own.
    s = GaugeMetricFamily("s", "S.", labels=["gunicorn_service"], )
    s.add_metric(["mine"], 1.0)
    merged, _ = merge_snapshots([snap("a", s)], with_service=False)
    assert merged[0].samples[0].labels == {"gunicorn_service": "mine", "gunicorn_instance": "a"}


def test_merge_conflicts() -> None:
    reserved = GaugeMetricFamily("own", "Own.")
    states = StateSetMetricFamily("gunicorn_instance", "States.", value={"up": True})
    counter_c = Metric("c", "C.", "counter")
    counter_c.add_sample("c_created", {}, 1.0)
    gauge_created = GaugeMetricFamily("c_created", "Clash.", value=1.0)
    merged, conflicts = merge_snapshots(
        [snap("b", gauge_created, GaugeMetricFamily("own", "Mine.", value=1)),
         snap("a", counter_c, states)],
        with_service=False, reserved=[reserved],
    )  # fmt: skip
    assert [m.name for m in merged] == ["c"]
    assert [(c.snapshot.instance_id, c.family, c.reason) for c in conflicts] == [
        ("a", "gunicorn_instance",
         "a stateset whose states are in the gunicorn_instance label the sidecar adds"),
        ("b", "c_created", "its name c_created is taken by counter c (instance 'a')"),
        ("b", "own", "its name own is taken by gauge own (the sidecar's own)"),
    ]  # fmt: skip


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_problems_are_logged_once_while_they_last_in_bounded_memory() -> None:
    handler = ListHandler()
    log = logging.getLogger("test_snapshot.problems")
    log.addHandler(handler)
    log.propagate = False
    problems = ProblemLog(log, limit=3)

    def round_of(*keys: str) -> None:
        found = Round()
        for key in keys:
            found.add("snapshot", key, "bad %s", key)
        problems.end_round(found)

    round_of("a", "b")
    round_of("a", "b")
    assert handler.messages == ["bad a", "bad b"]
    round_of("b")  # a cleared: forgotten
    round_of("a", "b", "c", "d", "e")
    assert handler.messages[2:] == ["bad a", "bad c",
                                    "2 more problems, not logged one by one (at most 3 are "
                                    "remembered); each is counted in the sidecar's faults "
                                    "metric"]  # fmt: skip
    round_of("a", "b", "c", "d", "e")
    assert len(handler.messages) == 5  # the overflow is said once
    round_of("d", "e")
    assert handler.messages[5:] == ["bad d", "bad e"]


def test_concurrent_callers_share_one_run() -> None:
    shared: Shared[int] = Shared()
    runs: list[int] = []
    start = threading.Barrier(8)
    results: list[object] = []

    def slow() -> int:
        runs.append(1)
        time.sleep(0.3)
        if len(runs) == 2:
            raise OSError("second run fails")
        return len(runs)

    def call() -> None:
        start.wait()
        try:
            results.append(shared.run(slow))
        except (OSError, JoinedReadFailed) as exc:
            results.append(type(exc).__name__ + ": " + str(exc))

    for expected in ([1] * 8, ["OSError: second run fails"] +
                     ["JoinedReadFailed: OSError: second run fails"] * 7):  # fmt: skip
        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert sorted(map(str, results)) == sorted(map(str, expected))
        results.clear()
    assert len(runs) == 2
