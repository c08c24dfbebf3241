"""What is under the key prefix cannot be trusted: the sidecar and the pushers against it.

Real redis-server, real gunicorn masters, the real ``gunicorn-prom-ext serve``; the hostile
values are written straight into Redis, as anything with write access could.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Gunicorn, GunicornFactory, Samples, parse_metrics, require_tool, wait_for
from redis_harness import (
    RedisFactory,
    RedisServer,
    Sidecar,
    SidecarFactory,
    redis_env,
    redis_servers,
    sidecars,
)

from gunicorn_prom_ext.storage.redis import index_key, instance_key

COUNT = "http_server_request_duration_seconds_count"
FAULTS = "gunicorn_prom_ext_sidecar_faults_total"
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}
KINDS = ("snapshot", "snapshot_missing", "index", "family_conflict", "redis_unavailable")


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    yield from redis_servers(tmp_path)


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    yield from sidecars(tmp_path)


def snapshot(instance_id: str, families: object = None, **fields: object) -> bytes:
    """A snapshot as the pusher writes one (or, with ``fields``, nearly)."""
    things = [["things", "gauge", "Things.", "", [["things", {"a": "b"}, 1.0]]]]
    document = {"v": 1, "epoch": 1, "seq": 1, "id": instance_id,
                "families": things if families is None else families}  # fmt: skip
    document.update(fields)
    return json.dumps(document, separators=(",", ":")).encode()


def gauge(*samples: list[object], name: str = "things") -> list[object]:
    return [[name, "gauge", "Things.", "", list(samples)]]


def put(server: RedisServer, prefix: str, instance_id: str | bytes, blob: bytes,
        ttl_ms: int = 120_000) -> None:  # fmt: skip
    """Store a snapshot and list its instance, as a push does (minus the checks)."""
    client = server.client()
    raw_id = instance_id if isinstance(instance_id, bytes) else instance_id.encode()
    seconds, micros = client.time()
    client.set(prefix.encode() + b":instance:" + raw_id, blob, px=ttl_ms)
    client.zadd(index_key(prefix), {raw_id: seconds * 1000 + micros // 1000 + ttl_ms})


def faults(samples: Samples) -> dict[str, float]:
    return {dict(labels)["kind"]: value for (name, labels), value in samples.items()
            if name == FAULTS}  # fmt: skip


def instances(samples: Samples) -> set[str]:
    return {dict(labels)["gunicorn_instance"] for (name, labels) in samples if name != FAULTS}


def requests_per_instance(samples: Samples) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == COUNT:
            key = dict(labels)["gunicorn_instance"]
            out[key] = out.get(key, 0.0) + value
    return out


def assert_valid_page(sidecar: Sidecar, promtool: str) -> Samples:
    """The page in both formats, as promtool and prometheus_client's parsers see it."""
    text = sidecar.text()
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert (check.returncode, check.stdout + check.stderr) == (0, ""), text
    status, body = sidecar.get(OPENMETRICS)
    assert status == 200
    openmetrics = parse_metrics(body.decode(), openmetrics=True)
    samples = parse_metrics(text)
    assert set(samples) <= set(openmetrics)  # OpenMetrics adds no series, renames none
    return samples


def log_lines(text: str, fragment: str) -> list[str]:
    return [line for line in text.splitlines() if fragment in line]


# Foreign snapshots, each under its own instance id, and what the sidecar says about it.
HOSTILE: dict[str, tuple[bytes, str]] = {
    "label-int": (snapshot("label-int", gauge(["things", {"a": 1}, 1.0])),
                  "label a is 1, expected UTF-8 text"),
    "label-nested": (snapshot("label-nested", gauge(["things", {"a": {"b": "c"}}, 1.0])),
                     "label a is an object, expected UTF-8 text"),
    "families-object": (snapshot("families-object", {"things": []}),
                        "families is an object, expected a list"),
    "family-object": (snapshot("family-object", [{"name": "things"}]),
                      "family 0: an object, expected [name, type, help, unit, samples]"),
    "name-number": (snapshot("name-number", [[7, "gauge", "", "", []]]),
                    "family 0: name 7 is not a Prometheus metric name"),
    "type-unknown": (snapshot("type-unknown", [["things", "meter", "", "", []]]),
                     "type 'meter', expected one of counter, gauge"),
    "value-string": (snapshot("value-string", gauge(["things", {}, "1"])),
                     "value '1', expected a number"),
    "value-list": (snapshot("value-list", gauge(["things", {}, [1]])),
                   "value a list, expected a number"),
    "value-bool": (snapshot("value-bool", gauge(["things", {}, True])),
                   "value True, expected a number"),
    "nan-text": (snapshot("nan-text", gauge(["things", {}, "NaN"])),
                 "value 'NaN', expected a number"),
    "huge-text": (snapshot("huge-text", gauge(["things", {}, "1e999"])),
                  "value '1e999', expected a number"),
    "huge-number": (snapshot("huge-number").replace(b"1.0", b"1e999"),
                    "number 1e999 out of range"),
    "huge-integer": (snapshot("huge-integer").replace(b"1.0", b"9" * 400),
                     "a number of 400 digits"),
    "labels-list": (snapshot("labels-list", gauge(["things", [["a", "b"]], 1.0])),
                    "labels are a list, expected an object"),
    "sample-elsewhere": (snapshot("sample-elsewhere", gauge(["other_things", {}, 1.0])),
                         "'other_things' is not a sample name of gauge things"),
    "metric-name": (snapshot("metric-name", gauge(["th.ings", {}, 1.0], name="th.ings")),
                    "name 'th.ings' is not a Prometheus metric name"),
    "label-name": (snapshot("label-name", gauge(["things", {"a-b": "c"}, 1.0])),
                   "label 'a-b' is not a Prometheus label name"),
    "label-reserved": (snapshot("label-reserved", gauge(["things", {"__name__": "x"}, 1.0])),
                       "label '__name__' is not a Prometheus label name"),
    "surrogate": (snapshot("surrogate").replace(b'"b"', b'"\\ud800"'),
                  "label a is '\\ud800', expected UTF-8 text"),
    "not-utf8": (snapshot("not-utf8").replace(b"Things.", b"Th\xffngs."), "not UTF-8"),
    "not-json": (b"{'v': 1}", "not JSON"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deep"),
    "huge": (snapshot("huge").replace(b"Things.", b"x" * 50_000_000),
             "bytes, more than the 16777216 read"),
    "copied": (snapshot("someone-else"), "the snapshot of instance 'someone-else', not of"),
    "version-2": (snapshot("version-2", v=2), "format version 2, expected 1"),
    "twice": (snapshot("twice", gauge(["things", {}, 1.0], ["things", {}, 2.0])),
              "appears twice"),
    "no-inf-bucket": (snapshot("no-inf-bucket", [["h", "histogram", "", "", [
        ["h_bucket", {"le": "1.0"}, 1.0], ["h_count", {}, 1.0], ["h_sum", {}, 0.5]]]]),
        "no +Inf bucket"),
    "names-collide": (snapshot("names-collide", [
        ["reqs", "counter", "", "", [["reqs_total", {}, 1.0]]],
        ["reqs_total", "gauge", "", "", [["reqs_total", {}, 1.0]]]]),
        "its samples' name reqs_total is also family 0's (reqs)"),
}  # fmt: skip


@pytest.mark.slow
def test_bad_snapshots_cost_only_their_instance(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    promtool = require_tool("promtool")
    server = redis_factory().start()
    env = redis_env(server, REDIS_PUSH_INTERVAL="0.3")
    good = gunicorn_factory("testapp:app", env={**env, "REDIS_INSTANCE_ID": "good"}).start()
    for _ in range(3):
        assert good.request("/")[0] == 200
    for instance_id, (blob, _) in HOSTILE.items():
        put(server, "gunicorn", instance_id, blob)
    sidecar = sidecar_factory(env)

    def served() -> Samples | None:
        samples = parse_metrics(sidecar.text())
        return samples if requests_per_instance(samples) == {"good": 3.0} else None

    wait_for(served, timeout=10, message="the good instance's requests")
    for _ in range(3):
        samples = assert_valid_page(sidecar, promtool)
        assert instances(samples) == {"good"}  # nothing of a bad snapshot leaks through
    scrapes = faults(samples)["snapshot"] / len(HOSTILE)
    assert scrapes >= 6 and scrapes == int(scrapes)  # every bad snapshot, every scrape
    assert {k: v for k, v in faults(samples).items() if k != "snapshot"} == dict.fromkeys(
        KINDS[1:], 0.0
    )
    log = sidecar.log_text()
    for instance_id, (_, reason) in HOSTILE.items():
        lines = log_lines(log, f"skipped the snapshot of instance {instance_id!r} ")
        assert len(lines) == 1, (instance_id, lines)  # once, however many scrapes
        assert reason in lines[0], (reason, lines[0])
    assert "Traceback" not in log and "[ERROR] metrics endpoint" not in log


def families_of(instance_id: str, *families: list[object]) -> bytes:
    return snapshot(instance_id, list(families))


@pytest.mark.slow
def test_merge_keeps_the_page_valid_when_instances_disagree(
    redis_factory: RedisFactory, sidecar_factory: SidecarFactory
) -> None:
    promtool = require_tool("promtool")
    server = redis_factory().start()
    put(server, "svc", "a", families_of(
        "a",
        ["temperature", "gauge", "Temperature (a).", "", [["temperature", {}, 20.0]]],
        ["reqs", "counter", "Requests.", "", [["reqs_total", {"route": "/"}, 5.0]]],
        # The sidecar's own metric: served by the sidecar, never by an instance.
        ["gunicorn_prom_ext_sidecar_faults", "counter", "Forged.", "",
         [["gunicorn_prom_ext_sidecar_faults_total", {"kind": "snapshot"}, 99.0]]],
    ))  # fmt: skip
    put(server, "svc", "b", families_of(
        "b",
        ["temperature", "gauge", "Temperature (b).", "", [["temperature", {}, 21.0]]],
        ["reqs_total", "gauge", "Not a counter.", "", [["reqs_total", {}, 1.0]]],
    ))  # fmt: skip
    put(server, "svc", "c", families_of(
        "c",
        ["temperature", "counter", "Temperature?", "", [["temperature_total", {}, 3.0]]],
        ["labelled", "gauge", "Labels the sidecar adds, already there.", "", [
            ["labelled", {"gunicorn_instance": "fake"}, 1.0],
            ["labelled", {"exported_gunicorn_instance": "x"}, 2.0],
            ["labelled", {"gunicorn_service": "other"}, 3.0]]],
    ))  # fmt: skip
    sidecar = sidecar_factory(redis_env(server), "--all-prefixes")
    for _ in range(2):
        samples = assert_valid_page(sidecar, promtool)
    svc = ("gunicorn_service", "svc")
    assert {k: v for k, v in samples.items() if k[0] != FAULTS} == {
        ("temperature", (("gunicorn_instance", "a"), svc)): 20.0,
        ("temperature", (("gunicorn_instance", "b"), svc)): 21.0,
        ("reqs_total", (("gunicorn_instance", "a"), svc, ("route", "/"))): 5.0,
        ("labelled", (("exported_exported_gunicorn_instance", "fake"),
                      ("gunicorn_instance", "c"), svc)): 1.0,
        ("labelled", (("exported_gunicorn_instance", "x"), ("gunicorn_instance", "c"),
                      svc)): 2.0,
        ("labelled", (("exported_gunicorn_service", "other"), ("gunicorn_instance", "c"),
                      svc)): 3.0,
    }  # fmt: skip
    conflicts = faults(samples)["family_conflict"]
    assert conflicts >= 9 and conflicts % 3 == 0  # three families left out, every scrape
    assert faults(samples) == {**dict.fromkeys(KINDS, 0.0), "family_conflict": conflicts}
    assert "# HELP temperature Temperature (a).\n" in sidecar.text()  # the first one's help
    log = sidecar.log_text()
    expected = {
        "left out family gunicorn_prom_ext_sidecar_faults of instance 'a'":
            "its name gunicorn_prom_ext_sidecar_faults is taken by counter "
            "gunicorn_prom_ext_sidecar_faults (the sidecar's own)",
        "left out family reqs_total of instance 'b'":
            "its name reqs_total is taken by counter reqs (instance 'a')",
        "left out family temperature of instance 'c'":
            "a counter here, but a gauge in instance 'a', served first",
    }  # fmt: skip
    for fragment, reason in expected.items():
        lines = log_lines(log, fragment)
        assert len(lines) == 1 and lines[0].endswith(reason), (fragment, lines)
    assert len(log_lines(log, "left out family")) == 3


def master_faults(g: Gunicorn, kind: str) -> float:
    return g.metrics().get(("gunicorn_prom_ext_faults_total", (("kind", kind),)), 0.0)


@pytest.mark.slow
def test_a_push_refused_as_stale_is_said_once_counted_and_recovers(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory().start()
    # Someone else's snapshot, from a master "started" in the year 5138, for 6 s.
    forged = snapshot("web", epoch=99_999_999_999_999, seq=7)
    put(server, "gunicorn", "web", forged, ttl_ms=6000)
    env = redis_env(server, REDIS_INSTANCE_ID="web", REDIS_PUSH_INTERVAL="0.3")
    g = gunicorn_factory("testapp:app", env=env).start()
    for _ in range(4):
        assert g.request("/")[0] == 200
    wait_for(lambda: master_faults(g, "redis_stale") >= 3, timeout=5)
    assert server.client().get(instance_key("gunicorn", "web")) == forged  # never overridden
    sidecar = sidecar_factory(redis_env(server))
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"web": 4.0}, timeout=8,
             message="the instance's own snapshot once the forged one expired")  # fmt: skip
    refused = master_faults(g, "redis_stale")
    time.sleep(1.0)
    assert master_faults(g, "redis_stale") == refused  # accepted again: no more counted
    log = g.log_text()
    stale = log_lines(log, "refuses this master's pushes as stale")
    assert len(stale) == 1, stale
    assert re.search(
        r"'gunicorn:instance:web' holds a newer snapshot \(epoch 99999999999999, started "
        r"5138-11-16 09:46:39 UTC, push 7, from a writer that is not a master of this version\) "
        r"than this master's \(epoch \d{13}, started 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC, "
        r"push 1, master [^)]+\); it expires in [1-6]s\. Another master pushes as instance "
        r"'web'", stale[0],
    ), stale[0]  # fmt: skip
    again = log_lines(log, "accepts this master's pushes again")
    assert len(again) == 1 and f"after {int(refused)} refused" in again[0], (again, refused)
    assert "Redis unreachable" not in log and master_faults(g, "redis_push") == 0


@pytest.mark.slow
def test_two_masters_with_one_instance_id_never_take_turns(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory().start()
    env = redis_env(server, REDIS_INSTANCE_ID="same", REDIS_PUSH_INTERVAL="0.2",
                    REDIS_RETENTION="2")  # fmt: skip
    first = gunicorn_factory("testapp:app", env=env).start()
    second = gunicorn_factory("testapp:app", env=env).start()  # started later: it wins
    for _ in range(3):
        assert first.request("/")[0] == 200
    for _ in range(5):
        assert second.request("/")[0] == 200
    sidecar = sidecar_factory(redis_env(server))
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"same": 5.0}, timeout=5)
    seen = set()
    for _ in range(15):  # pushes every 0.2 s from both: the series never flips
        seen.add(requests_per_instance(sidecar.samples())["same"])
        time.sleep(0.1)
    assert seen == {5.0}
    stale = log_lines(first.log_text(), "refuses this master's pushes as stale")
    assert len(stale) == 1, stale
    assert f"from master '{socket.gethostname()}:{second.master_pid}:" in stale[0]
    assert master_faults(first, "redis_stale") > 5
    assert "as stale" not in second.log_text()
    second.stop()  # its snapshot expires after its retention; the first takes over
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"same": 3.0}, timeout=6)
    assert len(log_lines(first.log_text(), "accepts this master's pushes again")) == 1


@pytest.mark.slow
def test_keys_of_the_wrong_type(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory().start()
    client = server.client()
    client.rpush(instance_key("gunicorn", "listy"), "not a snapshot")
    client.zadd(index_key("gunicorn"), {"listy": 10**15})
    client.set(index_key("broken"), "not an index")
    listy = gunicorn_factory("testapp:app", env=redis_env(
        server, REDIS_INSTANCE_ID="listy", REDIS_PUSH_INTERVAL="0.2")).start()  # fmt: skip
    broken = gunicorn_factory("testapp:app", env=redis_env(
        server, REDIS_KEY_PREFIX="broken", REDIS_PUSH_INTERVAL="0.2")).start()  # fmt: skip
    sidecar = sidecar_factory(redis_env(server))
    broken_sidecar = sidecar_factory(redis_env(server, REDIS_KEY_PREFIX="broken"))
    for _ in range(3):
        assert faults(sidecar.samples())["snapshot"] > 0
        samples = broken_sidecar.samples()  # 200: a broken index is not an outage
        assert set(samples) == {(FAULTS, (("kind", kind),)) for kind in KINDS}
    assert faults(samples)["index"] >= 3
    assert len(log_lines(sidecar.log_text(), "(key 'gunicorn:instance:listy'): a Redis list, "
                                             "not a string")) == 1  # fmt: skip
    assert len(log_lines(broken_sidecar.log_text(), "the index 'broken:instances' is a Redis "
                                                    "string, not a sorted set")) == 1  # fmt: skip
    wait_for(lambda: min(master_faults(g, "redis_push") for g in (listy, broken)) >= 3)
    refusal = "refuses the push: the {} is a Redis {}, where this package keeps a {}"
    for g, what in ((listy, ("instance key 'gunicorn:instance:listy'", "list", "string")),
                    (broken, ("index 'broken:instances'", "string", "sorted set"))):  # fmt: skip
        log = g.log_text()
        assert len(log_lines(log, refusal.format(*what))) == 1, log
        assert "unreachable" not in log
    client.delete(instance_key("gunicorn", "listy"))
    wait_for(lambda: "listy" in instances(sidecar.samples()), timeout=5)
    assert len(log_lines(listy.log_text(), "accepts this master's pushes again")) == 1


@pytest.mark.slow
def test_an_index_of_100000_ghosts_and_ids_that_are_not_utf8(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    promtool = require_tool("promtool")
    server = redis_factory().start()
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for start in range(0, 100_000, 10_000):
        ghosts = {f"ghost-{i}": 10**15 for i in range(start, start + 10_000)}  # listed, no key
        pipe.zadd(index_key("gunicorn"), ghosts)
    pipe.execute()
    put(server, "gunicorn", b"\xff\xfe-not-utf8", snapshot("x"))
    env = redis_env(server, REDIS_PUSH_INTERVAL="0.3")
    good = gunicorn_factory("testapp:app", env={**env, "REDIS_INSTANCE_ID": "good"}).start()
    assert good.request("/")[0] == 200
    sidecar = sidecar_factory(env)
    wait_for(lambda: requests_per_instance(sidecar.samples()) == {"good": 1.0}, timeout=20)
    timings = []
    for _ in range(3):
        started = time.monotonic()
        samples = assert_valid_page(sidecar, promtool)  # two scrapes: text and OpenMetrics
        timings.append((time.monotonic() - started) / 2)
    print(f"scrape of an index of 100,002 ids: {min(timings) * 1000:.0f} ms")
    assert max(timings) < 2.0  # about a tenth of a second on the 2-core machine
    counted = faults(samples)
    scrapes = counted["index"] / 2  # the id that is not UTF-8, and the index's size
    assert scrapes >= 6 and scrapes == int(scrapes)
    # The live ones first (listed until their retention ends), then ghosts up to 10,000.
    assert counted["snapshot_missing"] == 9_998 * scrapes
    assert instances(samples) == {"good"}
    log = sidecar.log_text()
    assert len(log_lines(log, "lists an id that is not UTF-8 (b'\\xff\\xfe-not-utf8')")) == 1
    assert len(log_lines(log, "the index 'gunicorn:instances' lists 100002 instances, more "
                              "than the 10000 read")) == 1  # fmt: skip
    # At most 256 problems remembered: the rest are said in one line, and only counted.
    assert len(log_lines(log, "is listed but its snapshot")) == 254
    assert len(log_lines(log, "more problems, not logged one by one")) == 1


@pytest.mark.slow
def test_a_large_bad_snapshot_is_checked_once_not_every_scrape(
    redis_factory: RedisFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory().start()
    samples: list[list[object]] = [["things", {"route": f"/r/{i}"}, 1.0] for i in range(150_000)]
    samples.append(["things", {"route": "/last"}, "one"])  # wrong only at the very end
    put(server, "gunicorn", "large", snapshot("large", gauge(*samples)))
    put(server, "gunicorn", "small", snapshot("small"))
    sidecar = sidecar_factory(redis_env(server))
    timings = []
    for _ in range(4):
        started = time.monotonic()
        samples_seen = sidecar.samples()
        timings.append(time.monotonic() - started)
        assert instances(samples_seen) == {"small"}
    print("scrapes with a large bad snapshot: " + ", ".join(f"{t:.2f} s" for t in timings))
    assert max(timings[1:]) < timings[0] / 2  # the check ran once; Redis still sends it
    assert faults(samples_seen)["snapshot"] == 4.0
    assert len(log_lines(sidecar.log_text(), "sample 150000: value 'one', expected")) == 1


@pytest.mark.slow
def test_every_prefix_mode_skips_what_cannot_be_a_service(
    redis_factory: RedisFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory().start()
    client = server.client()
    put(server, "svc", "a", snapshot("a"))
    client.zadd(b"\xfe\xff:instances", {"x": 10**15})  # an index whose name is not UTF-8
    client.set("other:instances", "a string of someone else's, not an index")
    sidecar = sidecar_factory(redis_env(server, PROMETHEUS_NAMESPACE="shop"), "--all-prefixes")
    for _ in range(3):
        samples = sidecar.samples()
    assert {k: v for k, v in samples.items() if "sidecar_faults" not in k[0]} == {
        ("things", (("a", "b"), ("gunicorn_instance", "a"), ("gunicorn_service", "svc"))): 1.0
    }
    own = {dict(labels)["kind"]: value for (name, labels), value in samples.items()
           if name == "shop_gunicorn_prom_ext_sidecar_faults_total"}  # fmt: skip
    assert own == {**dict.fromkeys(KINDS, 0.0), "index": 3.0}
    lines = log_lines(sidecar.log_text(), "looks like an index but its name is not UTF-8")
    assert len(lines) == 1 and "b'\\xfe\\xff:instances'" in lines[0], lines
