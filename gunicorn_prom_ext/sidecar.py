"""``gunicorn-prom-ext serve``: the metrics of every instance found in Redis.

The sidecar runs the same MetricsEndpoint as a gunicorn master (same auth and TLS
settings) over a registry holding a RedisCollector, which reads the snapshots the
masters push (storage/redis.py) and labels every series with its instance.

Whatever is under the key prefix is read as untrusted: a snapshot that is not one this
version can serve (storage/snapshot.py), a key of the wrong Redis type or an index listing
ids that cannot be labels costs only what it touches. Each problem is logged once while it
lasts and counted in the sidecar's own ``gunicorn_prom_ext_sidecar_faults_total{kind}``,
which the page always carries (every kind, from 0):

- ``snapshot``: a listed instance's snapshot skipped (malformed, invalid, too large, not a
  string key, or another instance's);
- ``snapshot_missing``: a listed instance whose snapshot is gone (evicted, deleted);
- ``index``: an index key that is not a sorted set, or an id in it that is not UTF-8;
- ``family_conflict``: one instance's family left out (see sidecar_merge.py);
- ``redis_unavailable``: a scrape answered 503 because Redis could not be read.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gunicorn_prom_ext.endpoint import SourceUnavailable
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.sidecar_merge import merge_snapshots
from gunicorn_prom_ext.sidecar_problems import JoinedReadFailed, ProblemLog, Round, Shared
from gunicorn_prom_ext.storage.redis import (
    INDEX_SUFFIX,
    index_key,
    instance_key,
    make_client,
    prefix_of_index,
    redis_target,
)
from gunicorn_prom_ext.storage.redis_scripts import LIVE_SCRIPT, READ_SCRIPT
from gunicorn_prom_ext.storage.snapshot import MAX_SNAPSHOT_BYTES, Snapshot, SnapshotError
from gunicorn_prom_ext.storage.snapshot import deserialise as parse_snapshot

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

FAULTS_METRIC = "gunicorn_prom_ext_sidecar_faults"
FAULTS_HELP = "Faults gunicorn-prom-ext serve contained (each problem logged once), by kind."
FAULT_KINDS = ("snapshot", "snapshot_missing", "index", "family_conflict", "redis_unavailable")
# Instances read per script run: Redis serves other clients between two batches.
READ_BATCH = 500
# Instances read per service: a page of more would be too large to scrape anyway, and a
# forged index of millions must not cost seconds and gigabytes per scrape. A live instance
# (listed until its retention ends) comes before anything listed further ahead.
MAX_LISTED = 10_000
Parsed = tuple[bytes, "Snapshot | str"]


class RedisUnavailable(SourceUnavailable):
    """Redis could not be read for a scrape; the endpoint answers 503."""


class RedisCollector(Collector):
    """The instances listed under one prefix (or every prefix), read at scrape time.

    Concurrent scrapes share one read of Redis: a scrape that arrives while another is
    reading waits for that read's result instead of queueing a read of its own, so eight
    scrapers of a slow Redis wait about one read, not eight.
    """

    def __init__(self, settings: Settings, log: Log, *, all_prefixes: bool = False) -> None:
        self._settings = settings
        self._log = log
        self._prefix = None if all_prefixes else settings.redis_key_prefix
        self.target = redis_target(settings)
        self._client: Redis | None = None
        self._scripts: tuple[Script, Script] | None = None
        self._lock = threading.Lock()  # the connection and everything below: one reader
        self._failing = False
        self._problems = ProblemLog(log)
        # (prefix, instance id) -> (digest of its snapshot, what it was read as)
        self._parsed: dict[tuple[str, str], Parsed] = {}
        self._faults = dict.fromkeys(FAULT_KINDS, 0)
        namespace = settings.namespace
        self.faults_name = f"{namespace}_{FAULTS_METRIC}" if namespace else FAULTS_METRIC
        self._shared: Shared[list[Metric]] = Shared()

    def collect(self) -> list[Metric]:
        try:
            return self._shared.run(self._collect_once)
        except JoinedReadFailed as exc:
            if isinstance(exc.__cause__, RedisUnavailable):  # 503 for every scrape that joined
                raise RedisUnavailable(str(exc.__cause__)) from None
            raise

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _collect_once(self) -> list[Metric]:
        from redis.exceptions import RedisError

        with self._lock:
            found = Round()
            try:
                snapshots = self._read(found)
            except RedisError as exc:
                self._faults["redis_unavailable"] += 1
                if not self._failing:
                    self._failing = True
                    self._log.error("Redis unreachable at %s (%s: %s); answering 503 until "
                                    "it is back", self.target, type(exc).__name__, exc)  # fmt: skip
                raise RedisUnavailable(f"Redis unavailable at {self.target}") from exc
            if self._failing:
                self._failing = False
                self._log.info("Redis at %s reachable again", self.target)
            merged, conflicts = merge_snapshots(
                snapshots, with_service=self._prefix is None, reserved=[self._fault_family()]
            )
            for c in conflicts:
                key = instance_key(c.snapshot.prefix, c.snapshot.instance_id)
                found.add("family_conflict", f"{key}\0{c.family}",
                          "left out family %s of instance %r (key %r): %s",
                          c.family, c.snapshot.instance_id, key, c.reason)  # fmt: skip
            for kind, count in found.counts.items():
                self._faults[kind] += count
            self._problems.end_round(found)
            return [*merged, self._fault_family()]

    def _fault_family(self) -> Metric:
        family = CounterMetricFamily(self.faults_name, FAULTS_HELP, labels=["kind"])
        for kind in FAULT_KINDS:
            family.add_metric([kind], self._faults[kind])
        return family

    def _connected(self) -> tuple[Redis, Script, Script]:
        if self._client is None or self._scripts is None:
            self._client = make_client(self._settings)
            self._scripts = (self._client.register_script(LIVE_SCRIPT),
                             self._client.register_script(READ_SCRIPT))  # fmt: skip
        return self._client, *self._scripts

    def _read(self, found: Round) -> list[Snapshot]:
        client, live, read = self._connected()
        prefixes = [self._prefix] if self._prefix is not None else self._scan(client, found)
        listings = _run_all(client, [(live, [index_key(p)], [MAX_LISTED]) for p in prefixes])
        listed: list[tuple[str, list[str]]] = []
        for prefix, (kind, ids, count) in zip(prefixes, listings, strict=True):
            index = index_key(prefix)
            if count > MAX_LISTED:
                found.add("index", f"{index}\0size", "the index %r lists %d instances, more "
                          "than the %d read: those listed furthest ahead are skipped", index,
                          count, MAX_LISTED)  # fmt: skip
            if kind not in (b"zset", b"none"):
                found.add("index", index, "the index %r is a Redis %s, not a sorted set: no "
                          "instance of service %r can be listed until it is deleted",
                          index, kind.decode(), prefix)  # fmt: skip
                continue
            listed.append((prefix, self._decoded_ids(index, ids, found)))
        batches, calls = [], []
        for prefix, ids in listed:
            for start in range(0, len(ids), READ_BATCH):
                batch = ids[start : start + READ_BATCH]
                keys = [index_key(prefix), *(instance_key(prefix, i) for i in batch)]
                calls.append((read, keys, [MAX_SNAPSHOT_BYTES, *batch]))
                batches.append((prefix, batch))
        replies = _run_all(client, calls)
        snapshots = []
        parsed, self._parsed = self._parsed, {}  # only what is still there is kept
        for (prefix, batch), batch_replies in zip(batches, replies, strict=True):
            for instance_id, reply in zip(batch, batch_replies, strict=True):
                snapshot = self._snapshot(prefix, instance_id, reply, found, parsed)
                if snapshot is not None:
                    snapshots.append(snapshot)
        return snapshots

    @staticmethod
    def _decoded_ids(index: str, raw_ids: Sequence[bytes], found: Round) -> list[str]:
        ids = []
        for raw in raw_ids:
            try:
                ids.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                found.add("index", f"{index}\0{raw!r}", "the index %r lists an id that is not "
                          "UTF-8 (%r): it cannot be a label; skipped", index, raw[:80])  # fmt: skip
        return ids

    def _snapshot(
        self, prefix: str, instance_id: str, reply: Any, found: Round,
        parsed: dict[tuple[str, str], Parsed],
    ) -> Snapshot | None:  # fmt: skip
        key = instance_key(prefix, instance_id)
        if reply is None:
            return None  # expired since it was listed
        if isinstance(reply, bytes):
            # A snapshot read before (unchanged since the last push, or a bad one that
            # stays) is not checked again: a large one takes a second or more.
            digest = hashlib.blake2b(reply, digest_size=16).digest()
            known = parsed.get((prefix, instance_id))
            if known is not None and known[0] == digest:
                outcome = known[1]
            else:
                try:
                    outcome = Snapshot(prefix, instance_id, parse_snapshot(reply, instance_id))
                except SnapshotError as exc:
                    outcome = str(exc)
            self._parsed[prefix, instance_id] = (digest, outcome)
            if isinstance(outcome, Snapshot):
                return outcome
            problem = outcome
        elif reply[0] == b"size":
            problem = f"{reply[1]} bytes, more than the {MAX_SNAPSHOT_BYTES} read"
        elif reply[0] == b"type":
            problem = f"a Redis {reply[1].decode()}, not a string"
        else:
            found.add("snapshot_missing", key, "instance %r is listed but its snapshot %r is "
                      "gone (evicted under maxmemory, or deleted); skipped until it pushes "
                      "again or its listing expires", instance_id, key)  # fmt: skip
            return None
        found.add("snapshot", key, "skipped the snapshot of instance %r (key %r): %s",
                  instance_id, key, problem)  # fmt: skip
        return None

    @staticmethod
    def _scan(client: Redis, found: Round) -> list[str]:
        # SCAN, not KEYS: it never blocks a busy Redis. Only sorted sets: an instance whose
        # id happens to end in ":instances" has a string key.
        prefixes = set()
        for key in client.scan_iter(match="*" + INDEX_SUFFIX, count=1000, _type="zset"):
            raw = cast(bytes, key)
            try:
                prefix = prefix_of_index(raw.decode("utf-8"))
            except UnicodeDecodeError:
                found.add("index", repr(raw), "the sorted set %r looks like an index but its "
                          "name is not UTF-8: skipped", raw[:200])  # fmt: skip
                continue
            if prefix is not None:
                prefixes.add(prefix)
        return sorted(prefixes)


ScriptCall = tuple["Script", list[str], list[Any]]


def _run_all(client: Redis, calls: list[ScriptCall]) -> list[Any]:
    """Every call's reply: a lone call in one round trip, several in one pipeline (plus the
    round trip in which redis-py checks that the scripts are loaded)."""
    if len(calls) == 1:
        script, keys, args = calls[0]
        return [script(keys=keys, args=args)]
    if not calls:
        return []
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        script(keys=keys, args=args, client=pipe)
    return pipe.execute()
