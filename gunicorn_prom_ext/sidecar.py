"""``gunicorn-prom-ext serve``: the metrics of every instance found in Redis.

The sidecar runs the same MetricsEndpoint as a gunicorn master (same auth and TLS
settings) over a registry holding a RedisCollector, which reads the snapshots the
masters push (storage/redis.py) and labels every series with its instance.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gunicorn_prom_ext.endpoint import SourceUnavailable
from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.storage.redis import (
    INDEX_SUFFIX,
    LIVE_SCRIPT,
    MAX_REMEMBERED,
    Snapshot,
    deserialise,
    index_key,
    instance_key,
    make_client,
    merge_snapshots,
    prefix_of_index,
    redis_target,
)

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script


class RedisUnavailable(SourceUnavailable):
    """Redis could not be read for a scrape; the endpoint answers 503."""


class RedisCollector(Collector):
    """The instances listed under one prefix (or every prefix), read at scrape time."""

    def __init__(self, settings: Settings, log: Log, *, all_prefixes: bool = False) -> None:
        self._settings = settings
        self._log = log
        self._prefix = None if all_prefixes else settings.redis_key_prefix
        self.target = redis_target(settings)
        self._client: Redis | None = None
        self._script: Script | None = None
        self._lock = threading.Lock()
        self._failing = False
        self._bad_snapshots: set[str] = set()

    def collect(self) -> list[Metric]:
        from redis.exceptions import RedisError

        with self._lock:
            try:
                snapshots = self._read()
            except RedisError as exc:
                if not self._failing:
                    self._failing = True
                    self._log.error("Redis unreachable at %s (%s: %s); answering 503 until "
                                    "it is back", self.target, type(exc).__name__, exc)  # fmt: skip
                raise RedisUnavailable(f"Redis unavailable at {self.target}") from exc
            if self._failing:
                self._failing = False
                self._log.info("Redis at %s reachable again", self.target)
        return merge_snapshots(snapshots, with_service=self._prefix is None)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _read(self) -> list[Snapshot]:
        if self._client is None or self._script is None:
            self._client = make_client(self._settings)
            self._script = self._client.register_script(LIVE_SCRIPT)
        client, live = self._client, self._script
        prefixes = [self._prefix] if self._prefix is not None else self._scan_prefixes(client)
        listed: list[tuple[str, str]] = []
        for prefix in prefixes:
            ids = cast(Sequence[bytes], live(keys=[index_key(prefix)]))
            listed += [(prefix, i.decode("utf-8", "replace")) for i in ids]
        if not listed:
            return []
        blobs = cast(Sequence[bytes | None], client.mget([instance_key(*pi) for pi in listed]))
        snapshots = []
        for (prefix, instance_id), blob in zip(listed, blobs, strict=True):
            if blob is None:
                continue  # expired between the two reads
            try:
                snapshots.append(Snapshot(prefix, instance_id, deserialise(blob)))
            except ValueError as exc:
                self._bad_snapshot(instance_key(prefix, instance_id), exc)
        return snapshots

    @staticmethod
    def _scan_prefixes(client: Redis) -> list[str]:
        # SCAN, not KEYS: it never blocks a busy Redis. Only sorted sets: an instance whose
        # id happens to end in ":instances" has a string key.
        prefixes = set()
        for key in client.scan_iter(match="*" + INDEX_SUFFIX, count=1000, _type="zset"):
            try:
                prefix = prefix_of_index(cast(bytes, key).decode("utf-8"))
            except UnicodeDecodeError:
                continue  # not written by us
            if prefix is not None:
                prefixes.add(prefix)
        return sorted(prefixes)

    def _bad_snapshot(self, key: str, exc: ValueError) -> None:
        if key in self._bad_snapshots:
            return
        if len(self._bad_snapshots) >= MAX_REMEMBERED:
            self._bad_snapshots.clear()
        self._bad_snapshots.add(key)
        self._log.error("skipped unreadable snapshot %r: %s", key, exc)
