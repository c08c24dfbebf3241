"""Redis mode against a real redis-server: pushes from the master, the serve sidecar, faults.

Every end-to-end test starts its own redis-server (tests/redis_harness.py) on a free
loopback port; nothing here mocks Redis or gunicorn.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import trustme
from harness import Gunicorn, GunicornFactory, Samples, parse_metrics, require_tool, wait_for
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from redis_harness import (
    RedisFactory,
    Sidecar,
    SidecarFactory,
    TlsFiles,
    redis_env,
    redis_servers,
    sidecars,
)
from test_startup_errors import assert_one_error, fail_to_start

from gunicorn_prom_ext import cli
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.sidecar_merge import merge_snapshots
from gunicorn_prom_ext.storage.redis import (
    INSTANCE_LABEL,
    SERVICE_LABEL,
    credentials_problem,
    default_instance_id,
    index_key,
    instance_key,
    prefix_of_index,
    redis_target,
)
from gunicorn_prom_ext.storage.redis_push import RedisPusher
from gunicorn_prom_ext.storage.redis_scripts import PUSH_SCRIPT
from gunicorn_prom_ext.storage.snapshot import Snapshot, deserialise, serialise

COUNT = "http_server_request_duration_seconds_count"
SIDECAR_FAULTS = "gunicorn_prom_ext_sidecar_faults"
# Spaces, colons, quotes, a backslash, glob characters and non-ASCII: keys are binary-safe
# and label values are escaped, so none of it may matter.
PREFIX = 'shop: front end/ünï "q" \\ *[x]'


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Build (not start) redis-servers; each is stopped at teardown."""
    yield from redis_servers(tmp_path)


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    """Start sidecars: ``sidecar_factory(env, *serve_args)``; each is stopped at teardown."""
    yield from sidecars(tmp_path)


def per_instance(samples: Samples, label: str = INSTANCE_LABEL) -> dict[str, float]:
    """Requests counted per value of ``label``."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == COUNT:
            key = dict(labels)[label]
            out[key] = out.get(key, 0.0) + value
    return out


def sidecar_counts(sidecar: Sidecar) -> dict[str, float] | None:
    status, body = sidecar.get()
    return per_instance(parse_metrics(body.decode())) if status == 200 else None


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_instances_counted_apart_and_together(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    promtool = require_tool("promtool")
    server = redis_factory().start()
    env = redis_env(server, REDIS_KEY_PREFIX=PREFIX, REDIS_PUSH_INTERVAL="0.5")
    a_id = 'a: ünï "1" \\'
    before = time.time()
    a = gunicorn_factory("testapp:app", env={**env, "REDIS_INSTANCE_ID": a_id}).start()
    b = gunicorn_factory("testapp:app", env=env).start()
    after = time.time()
    for _ in range(7):
        assert a.request("/") == (200, b"hello")
    for i in range(11):
        assert b.request(f"/items/{i}") == (200, f"item {i}".encode())

    sidecar = sidecar_factory({k: v for k, v in env.items() if k != "REDIS_KEY_PREFIX"},
                              "--key-prefix", PREFIX)  # fmt: skip

    def both_counted() -> dict[str, float] | None:
        counts = sidecar_counts(sidecar)
        return counts if counts and sorted(counts.values()) == [7.0, 11.0] else None

    counts = wait_for(both_counted, timeout=10, message="both instances' counts in the sidecar")
    b_id = next(key for key in counts if key != a_id)
    assert counts == {a_id: 7.0, b_id: 11.0}
    assert sum(counts.values()) == 18.0
    # The default id: this host, the master's start (Unix seconds), the master's pid.
    match = re.fullmatch(rf"{re.escape(socket.gethostname())}-(\d+)-{b.master_pid}", b_id)
    assert match is not None, b_id
    assert int(before) <= int(match.group(1)) <= int(after)

    text = sidecar.text()
    types = re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE)
    assert len(types) == len(set(types))  # every family once, whatever the instances
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert (check.returncode, check.stdout + check.stderr) == (0, "")

    # Each instance's own endpoint still shows its own requests only, unlabelled.
    assert (a.sum_values(COUNT), b.sum_values(COUNT)) == (7.0, 11.0)
    assert not any(INSTANCE_LABEL in dict(labels) for _, labels in a.metrics())

    everything = sidecar_factory(redis_env(server), "--all-prefixes")
    assert per_instance(everything.samples(), SERVICE_LABEL) == {PREFIX: 18.0}
    assert per_instance(everything.samples()) == {a_id: 7.0, b_id: 11.0}


class Load:
    """Requests to the app back to back from a thread, every status kept."""

    def __init__(self, g: Gunicorn) -> None:
        self._g = g
        self._stopping = threading.Event()
        self.statuses: list[int | None] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.statuses.append(self._g.request("/", timeout=5)[0])

    def stop(self) -> list[int | None]:
        self._stopping.set()
        self._thread.join(10)
        return self.statuses


@pytest.mark.slow
def test_down_at_start_killed_and_frozen_redis_loses_nothing(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory()  # not started: Redis is down when gunicorn starts
    env = redis_env(server, REDIS_PUSH_INTERVAL="0.3")
    g = gunicorn_factory("testapp:app", env=env).start()
    sidecar = sidecar_factory(env)
    unavailable = (503, f"Redis unavailable at redis://127.0.0.1:{server.port}/0\n".encode())
    assert sidecar.get() == unavailable

    load = Load(g).start()
    time.sleep(0.5)
    server.start()
    wait_for(lambda: (c := sidecar_counts(sidecar)) and sum(c.values()) > 0, timeout=5)

    server.kill()  # mid-load, then back on the same port
    time.sleep(1.0)
    assert sidecar.get() == unavailable
    server.start()
    wait_for(lambda: sidecar_counts(sidecar), timeout=5)

    server.freeze()  # slow: connections accepted, nothing answered
    time.sleep(1.5)
    assert sidecar.get() == unavailable  # after its 1 s timeout
    server.thaw()
    time.sleep(0.5)
    statuses = load.stop()

    assert len(statuses) > 100 and set(statuses) == {200}  # the app never noticed
    total = float(len(statuses))
    wait_for(lambda: (c := sidecar_counts(sidecar)) and sum(c.values()) == total, timeout=5,
             message=f"sidecar total {total}")  # fmt: skip
    assert g.sum_values(COUNT) == total
    # Three outages (down at start, killed, frozen): each logged once, and its end once.
    log = g.log_text()
    assert (log.count("Redis unreachable at"), log.count("reconnected")) == (3, 3), log
    assert g.value("gunicorn_prom_ext_faults_total", kind="redis_push") > 0
    sidecar_log = sidecar.log_text()
    assert sidecar_log.count("Redis unreachable at") == 3, sidecar_log
    assert sidecar_log.count("reachable again") == 3, sidecar_log


@pytest.mark.slow
@pytest.mark.parametrize("key", ["REDIS_PASSWORD", "REDIS_URL"])
def test_wrong_password_stops_gunicorn_before_serving(
    key: str, redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    server = redis_factory(password="the-right-one").start()
    wrong = "not-the-password-3141"
    url = f"redis://:{wrong}@127.0.0.1:{server.port}/0"
    given = {"REDIS_PASSWORD": wrong} if key == "REDIS_PASSWORD" else {"REDIS_URL": url}
    g = gunicorn_factory("testapp:app", env=redis_env(server, **given))
    output = fail_to_start(g, tmp_path / "tmpdir", timeout=10)
    assert_one_error(
        output,
        f"{key} (environment): expected the password redis://127.0.0.1:{server.port}/0 accepts, "
        "got one it rejects (invalid username-password pair or user is disabled)",
    )
    assert wrong not in output


@pytest.mark.slow
def test_tls_url_with_password_and_database(
    redis_factory: RedisFactory,
    gunicorn_factory: GunicornFactory,
    sidecar_factory: SidecarFactory,
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = TlsFiles(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    password = "p@ss: wörd/1"
    server = redis_factory(password=password, tls=files).start()
    url = (f"rediss://:{quote(password, safe='')}@127.0.0.1:{server.port}/2"
           f"?ssl_ca_certs={quote(str(files.ca))}")  # fmt: skip
    env = {"REDIS_ENABLED": "true", "REDIS_URL": url, "REDIS_PUSH_INTERVAL": "0.5",
           "REDIS_INSTANCE_ID": "tls-1"}  # fmt: skip
    g = gunicorn_factory("testapp:app", env=env).start()
    for _ in range(3):
        assert g.request("/")[0] == 200
    sidecar = sidecar_factory(env)
    wait_for(lambda: sidecar_counts(sidecar) == {"tls-1": 3.0}, timeout=10)
    assert server.client(db=2).exists(instance_key("gunicorn", "tls-1")) == 1
    assert server.client(db=0).dbsize() == 0


@pytest.mark.slow
def test_final_push_at_exit_and_retention(
    redis_factory: RedisFactory, gunicorn_factory: GunicornFactory, sidecar_factory: SidecarFactory
) -> None:
    server = redis_factory().start()
    # Pushes so rare that only the one at exit can deliver the requests.
    rare = gunicorn_factory("testapp:app", env=redis_env(
        server, REDIS_KEY_PREFIX="rare", REDIS_INSTANCE_ID="r", REDIS_PUSH_INTERVAL="30",
        REDIS_RETENTION="60",
    )).start()  # fmt: skip
    short = gunicorn_factory("testapp:app", env=redis_env(
        server, REDIS_KEY_PREFIX="short", REDIS_INSTANCE_ID="s", REDIS_PUSH_INTERVAL="0.5",
        REDIS_RETENTION="2",
    )).start()  # fmt: skip
    token = {"PROMETHEUS_AUTH_TOKEN": "t0ken"}
    sidecar = sidecar_factory({**redis_env(server), **token}, "--all-prefixes")
    assert sidecar.get()[0] == 401  # the endpoint's auth settings apply to the sidecar too
    auth = {"Authorization": "Bearer t0ken"}

    def services() -> dict[str, float] | None:
        """Requests per service, 0 for a service listed without any yet."""
        status, body = sidecar.get(auth)
        if status != 200:
            return None
        samples = parse_metrics(body.decode())
        listed = {dict(labels)[SERVICE_LABEL] for name, labels in samples
                  if not name.startswith(SIDECAR_FAULTS)}  # fmt: skip
        return {service: 0.0 for service in listed} | per_instance(samples, SERVICE_LABEL)

    wait_for(lambda: services() == {"rare": 0.0, "short": 0.0}, timeout=10)
    for _ in range(5):
        assert rare.request("/")[0] == 200
    for _ in range(3):
        assert short.request("/")[0] == 200
    wait_for(lambda: services() == {"rare": 0.0, "short": 3.0}, timeout=5)
    rare.stop()
    assert services() == {"rare": 5.0, "short": 3.0}  # only the push at exit can have told
    short.stop()
    assert services() == {"rare": 5.0, "short": 3.0}  # still listed, with its final totals
    stopped = time.monotonic()
    wait_for(lambda: services() == {"rare": 5.0}, timeout=6, interval=0.2)
    gone_after = time.monotonic() - stopped
    assert 1.0 <= gone_after <= 4.0, gone_after  # retention 2 s (+ scrape polling)
    assert server.client().zrange(index_key("short"), 0, -1) == []


def test_a_delayed_older_push_never_overwrites_a_newer_one(redis_factory: RedisFactory) -> None:
    server = redis_factory().start()
    registry = CollectorRegistry(auto_describe=False)
    requests = [0.0]

    class Requests(Collector):
        def collect(self) -> list[Metric]:
            return [CounterMetricFamily("requests", "Requests.", value=requests[0])]

    registry.register(Requests())
    settings = Settings(redis_host="127.0.0.1", redis_port=server.port)
    log = _ListLog()
    pusher = RedisPusher(settings, registry, log, instance_id="i", epoch=100)
    requests[0] = 1.0
    assert pusher.push()
    requests[0] = 2.0
    assert pusher.push()
    client = server.client()
    late = serialise(registry.collect(), "i", 100, 1, pusher.owner)  # seq 1 after seq 2
    keys = [instance_key("gunicorn", "i"), index_key("gunicorn")]
    refused = client.eval(PUSH_SCRIPT, 2, *keys, late, 300_000, "i", 100, 1, pusher.owner)
    assert refused[:4] == [b"stale", b"100", b"2", pusher.owner.encode()]
    assert 299_000 < refused[4] <= 300_000  # the newer snapshot's time to live, in ms
    stored = client.get(instance_key("gunicorn", "i"))
    assert isinstance(stored, bytes)
    assert deserialise(stored)[0].samples[0].value == 2.0
    assert log.lines == []
    # A later master with the same configured id (newer epoch) starts its own sequence.
    restarted = RedisPusher(settings, registry, log, instance_id="i", epoch=101)
    requests[0] = 0.0
    assert restarted.push()
    stored = client.get(instance_key("gunicorn", "i"))
    assert isinstance(stored, bytes)
    assert deserialise(stored)[0].samples[0].value == 0.0
    restarted.stop()
    pusher.stop()  # the older master's final push is refused: said once, counted
    assert len(log.lines) == 1 and "refuses this master's pushes as stale" in log.lines[0]
    stored = client.get(instance_key("gunicorn", "i"))
    assert isinstance(stored, bytes)
    assert deserialise(stored)[0].samples[0].value == 0.0


class _ListLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def _add(self, msg: str, *args: object, **kwargs: object) -> None:
        self.lines.append(msg % args if args else msg)

    debug = _add
    error = _add
    exception = _add
    warning = _add

    def info(self, msg: str, *args: object, **kwargs: object) -> None:
        pass


# --- pure functions -----------------------------------------------------------------------------


def families() -> list[Metric]:
    counter = CounterMetricFamily("http_things", "Things.", labels=["route", "lang"])
    counter.add_metric(['/a "b" \\ c', "ñ"], 7.0)
    histogram = HistogramMetricFamily("latency_seconds", "Latency.", labels=["m"])
    histogram.add_metric(["GET"], [("0.1", 3.0), ("+Inf", 4.0)], sum_value=0.5)
    gauge = GaugeMetricFamily("temperature_celsius", "Temp.", value=float("inf"), unit="celsius")
    return [counter, histogram, gauge]


def test_serialisation_round_trip() -> None:
    blob = serialise(families(), "web-1", 1700000000, 42)
    assert blob.startswith(b'{"v":1,"epoch":1700000000,"seq":42,"id":"web-1","families":[')
    assert deserialise(blob) == families()
    assert json.loads(blob)["families"][0] == [
        "http_things", "counter", "Things.", "", [["http_things_total",
        {"route": '/a "b" \\ c', "lang": "ñ"}, 7.0]],
    ]  # fmt: skip


@pytest.mark.parametrize(
    "blob",
    [b"", b"not json", b'{"v":2,"families":[]}', b'{"v":1}', b'{"v":1,"families":[["x"]]}',
     b'{"v":1,"families":[["x","nonsense","h","",[]]]}', b"\xff\xfe"],
)  # fmt: skip
def test_unreadable_snapshots_raise_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        deserialise(blob)


def test_key_names_keep_any_prefix() -> None:
    assert instance_key(PREFIX, "a:b") == PREFIX + ":instance:a:b"
    assert index_key(PREFIX) == PREFIX + ":instances"
    assert prefix_of_index(index_key(PREFIX)) == PREFIX
    assert prefix_of_index(index_key("")) == ""
    assert prefix_of_index(instance_key(PREFIX, "x")) is None


def test_default_instance_id() -> None:
    assert default_instance_id("web-1", 1700000000.9, 42) == "web-1-1700000000-42"
    assert default_instance_id(start_time=5.0) == f"{socket.gethostname()}-5-{os.getpid()}"


def test_merge_labels_every_sample_and_keeps_each_family_once() -> None:
    a = Snapshot("svc", "b-2", families())
    b = Snapshot("svc", "a-1", families()[:2])
    other = Snapshot("svc", "c-3", [GaugeMetricFamily("http_things", "Not a counter.", value=1)])
    merged, conflicts = merge_snapshots([a, b, other], with_service=True)
    assert [(c.snapshot.instance_id, c.family) for c in conflicts] == [("c-3", "http_things")]
    assert [m.name for m in merged] == ["http_things", "latency_seconds", "temperature_celsius"]
    things = merged[0]
    assert (things.type, things.documentation) == ("counter", "Things.")
    assert [(s.name, s.labels, s.value) for s in things.samples] == [
        ("http_things_total", {"route": '/a "b" \\ c', "lang": "ñ", INSTANCE_LABEL: iid,
                               SERVICE_LABEL: "svc"}, 7.0)
        for iid in ("a-1", "b-2")  # sorted by instance; c-3's gauge of that name is left out
    ]  # fmt: skip
    assert len(merged[1].samples) == 2 * 4  # two instances x (two buckets, count, sum)
    plain, _ = merge_snapshots([a], with_service=False)
    assert all(set(s.labels) >= {INSTANCE_LABEL} and SERVICE_LABEL not in s.labels
               for m in plain for s in m.samples)  # fmt: skip


def test_redis_target_never_shows_the_password() -> None:
    assert redis_target(Settings()) == "redis://localhost:6379/0"
    assert redis_target(Settings(redis_host="::1", redis_db=3)) == "redis://[::1]:6379/3"
    url = "rediss://user:s3cret@cache.internal:6380/2?ssl_ca_certs=/ca.pem"
    assert redis_target(Settings(redis_url=url)) == "rediss://cache.internal:6380/2"
    assert (
        redis_target(Settings(redis_url="unix://:pw@/run/redis.sock")) == "unix:///run/redis.sock"
    )


def test_credentials_problem_names_the_setting_and_its_source() -> None:
    reason = "invalid username-password pair or user is disabled."
    settings = Settings(redis_password="x")
    sources = {"redis_password": "file /etc/x.yml"}
    problem = credentials_problem(settings, sources, reason)
    assert str(problem) == (
        "exporter.redis.password (file /etc/x.yml): expected the password "
        "redis://localhost:6379/0 accepts, got one it rejects "
        "(invalid username-password pair or user is disabled)"
    )
    problem = credentials_problem(
        Settings(), {"redis_password": "default"}, "Authentication required."
    )
    assert str(problem) == (
        "REDIS_PASSWORD (default): expected the password redis://localhost:6379/0 requires, "
        "got none (Authentication required)"
    )
    url = "redis://:x@h:1/0"
    problem = credentials_problem(Settings(redis_url=url), {"redis_url": "command line"}, reason)
    assert (problem.key, problem.source) == ("redis_url", "command line")
    sources = {"redis_password": "GUNICORN_PROMETHEUS setting REDIS_PASSWORD"}
    problem = credentials_problem(settings, sources, reason)
    assert (problem.key, problem.source) == ("REDIS_PASSWORD", "GUNICORN_PROMETHEUS setting")


def test_serve_without_redis_py_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith(("REDIS_", "PROMETHEUS_", "GUNICORN_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setitem(sys.modules, "redis", None)  # how Python spells "cannot be imported"
    assert cli.main(["serve", "--port", "9999"]) == 1
    assert capsys.readouterr().err == (
        "gunicorn-prom-ext serve needs redis-py: pip install 'gunicorn-prom-ext[redis]'\n"
    )
