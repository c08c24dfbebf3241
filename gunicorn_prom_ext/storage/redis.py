"""Redis: one place for every instance of a service, never on the request path.

Workers keep recording into their local files. A thread of the master pushes this
instance's merged metrics (what its own endpoint serves) to Redis every few seconds and once
more at exit; the totals are cumulative, so a push after an outage catches up on everything.
``gunicorn-prom-ext serve`` reads them back and labels every series with its instance.

Keys, for a key prefix P (one per service) and an instance id I:

- ``P:instance:I``: the JSON snapshot of I's metric families; expires after I's retention.
- ``P:instances``: sorted set of instance ids, scored by the Redis time (ms) until which
  each stays listed (its last push plus its retention).

Scores come from Redis's own clock (TIME inside the script), never a host's: a host whose
clock runs ahead would otherwise drop the other hosts' live instances from the index.

Imported only once the multiprocess directory is set (it imports prometheus_client);
redis-py, an optional extra, is imported only when a client is made.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.metrics_core import Metric

from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.settings import SPECS_BY_FIELD, ConfigError, Problem, Settings, SettingSpec

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry
    from redis import Redis
    from redis.commands.core import Script

FAULT_KIND = "redis_push"
INSTANCE_LABEL = "gunicorn_instance"
SERVICE_LABEL = "gunicorn_service"
# Connect and read timeouts: a slow or silent Redis delays a push (or a sidecar scrape) by
# about this much, never a request, and never the master's shutdown by more than twice that.
SOCKET_TIMEOUT = 1.0
FORMAT_VERSION = 1
INDEX_SUFFIX = ":instances"
MAX_REMEMBERED = 64  # bounds the "logged once" memory for broken snapshots

# KEYS: snapshot, index. ARGV: snapshot, retention in ms, instance id, epoch, sequence.
# A push that timed out on our side may still run later (Redis was frozen, say): one older
# than the snapshot in place is dropped, so counters never go backwards while listed.
_PUSH_SCRIPT = """
local old = redis.call('GET', KEYS[1])
if old then
  local epoch, seq = string.match(old, '^{"v":%d+,"epoch":(%d+),"seq":(%d+),')
  epoch, seq = tonumber(epoch), tonumber(seq)
  local new_epoch, new_seq = tonumber(ARGV[4]), tonumber(ARGV[5])
  if epoch and (epoch > new_epoch or (epoch == new_epoch and seq > new_seq)) then
    return 0
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', retention)
redis.call('ZADD', KEYS[2], now + retention, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
if redis.call('PTTL', KEYS[2]) < retention then
  redis.call('PEXPIRE', KEYS[2], retention)
end
return now
"""
# KEYS: index. The ids still listed now.
LIVE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


# --- names ------------------------------------------------------------------------------------


def instance_key(prefix: str, instance_id: str) -> str:
    return f"{prefix}:instance:{instance_id}"


def index_key(prefix: str) -> str:
    return prefix + INDEX_SUFFIX


def prefix_of_index(key: str) -> str | None:
    return key[: -len(INDEX_SUFFIX)] if key.endswith(INDEX_SUFFIX) else None


def default_instance_id(
    hostname: str | None = None, start_time: float | None = None, pid: int | None = None
) -> str:
    """``<hostname>-<master start, Unix seconds>-<master pid>``.

    The hostname tells hosts and containers apart, the start time a restarted master that
    got the same pid (always pid 1 in a container, say), the pid two masters on one host.
    """
    hostname = socket.gethostname() if hostname is None else hostname
    start_time = time.time() if start_time is None else start_time
    pid = os.getpid() if pid is None else pid
    return f"{hostname}-{int(start_time)}-{pid}"


def redis_target(settings: Settings) -> str:
    """Where Redis is, for log lines and errors: never the password."""
    if settings.redis_url is None:
        host = f"[{settings.redis_host}]" if ":" in settings.redis_host else settings.redis_host
        return f"redis://{host}:{settings.redis_port}/{settings.redis_db}"
    parts = urlsplit(settings.redis_url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""  # redis-py will say what is wrong with it when it connects
    return f"{parts.scheme}://{host}{port}{parts.path}"


# --- the snapshot format ------------------------------------------------------------------------


def serialise(families: Iterable[Metric], instance_id: str, epoch: int, seq: int) -> bytes:
    """Compact JSON of the families: name, type, help, unit and (name, labels, value) samples.

    (epoch, seq) orders the snapshots of one instance id: epoch is its master's start time
    (a restarted master with a configured id starts a new one), seq counts its pushes. The
    push script reads them from the start of the blob, so the key order here is fixed.
    Timestamps and exemplars are dropped: nothing this package exposes has them.
    """
    document = {
        "v": FORMAT_VERSION,
        "epoch": epoch,
        "seq": seq,
        "id": instance_id,
        "families": [_family(f) for f in families],
    }
    # json writes +Inf/NaN as Infinity/NaN, which json.loads reads back.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _family(f: Metric) -> list[object]:
    samples = [[s.name, s.labels, s.value] for s in f.samples]
    return [f.name, f.type, f.documentation, f.unit, samples]


def deserialise(blob: bytes) -> list[Metric]:
    """The families of a snapshot; ValueError if it is not one this version can read."""
    try:
        document = json.loads(blob)
        if document["v"] != FORMAT_VERSION:
            raise ValueError(f"snapshot format {document['v']!r}, expected {FORMAT_VERSION}")
        families = []
        for name, kind, documentation, unit, samples in document["families"]:
            family = Metric(name, documentation, kind, unit)
            for sample_name, labels, value in samples:
                family.add_sample(sample_name, dict(labels), float(value))
            families.append(family)
        return families
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed snapshot: {exc!r}") from None


@dataclass(frozen=True)
class Snapshot:
    prefix: str
    instance_id: str
    families: list[Metric]


def merge_snapshots(snapshots: Iterable[Snapshot], *, with_service: bool) -> list[Metric]:
    """Every family once, each sample labelled with its instance (and service).

    A family whose type differs from the one already seen under that name (an instance on
    another version, say) is left out rather than making the whole exposition invalid.
    """
    merged: dict[str, Metric] = {}
    for snap in sorted(snapshots, key=lambda s: (s.prefix, s.instance_id)):
        extra = {INSTANCE_LABEL: snap.instance_id}
        if with_service:
            extra[SERVICE_LABEL] = snap.prefix
        for family in snap.families:
            target = merged.get(family.name)
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = target
            elif target.type != family.type:
                continue
            for sample in family.samples:
                target.add_sample(sample.name, {**sample.labels, **extra}, sample.value)
    return list(merged.values())


# --- connecting -----------------------------------------------------------------------------


def make_client(settings: Settings) -> Redis:
    """One connection, made here (so this raises RedisError when Redis is down), short
    timeouts, no retries: a failure is reported at once and the next push (or scrape) makes
    a new client."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "single_connection_client": True,
        # With a URL these apply only where it has none (redis-py lets the URL win).
        "password": settings.redis_password,
        "db": settings.redis_db,
    }
    if settings.redis_url is not None:
        return redis.Redis.from_url(settings.redis_url, **options)
    return redis.Redis(host=settings.redis_host, port=settings.redis_port, **options)


def check_credentials(settings: Settings, sources: Mapping[str, str]) -> None:
    """One PING at start: a rejected password is a ConfigError (gunicorn exits before
    serving); Redis merely unreachable or slow is not (the pusher logs it and retries)."""
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    try:
        client = make_client(settings)  # connects (and authenticates) at once
        try:
            client.ping()
        finally:
            client.close()
    except AuthenticationError as exc:
        raise ConfigError([credentials_problem(settings, sources, str(exc))]) from None
    except ResponseError as exc:
        if "DB index is out of range" not in str(exc):  # SELECT, sent when connecting
            return
        raise ConfigError([database_problem(settings, sources, str(exc))]) from None
    except RedisError:
        pass


def database_problem(settings: Settings, sources: Mapping[str, str], reason: str) -> Problem:
    """Names the setting that holds the database number Redis refused."""
    db = settings.redis_db
    in_url = False
    if settings.redis_url is not None:  # redis-py: ?db= wins over the path, either over REDIS_DB
        parts = urlsplit(settings.redis_url)
        path = parts.path.replace("/", "") if parts.scheme != "unix" else ""
        text = (parse_qs(parts.query).get("db") or [path])[0]
        if text.isdigit():
            db, in_url = int(text), True
    spec = SPECS_BY_FIELD["redis_url" if in_url else "redis_db"]
    key, source = _key_and_source(spec, sources.get(spec.field, "default"))
    target = redis_target(settings)
    if not target.startswith("unix:"):
        target = "/".join(target.split("/")[:3])  # without the database
    return Problem(key, source, f"a database number {target} has",
                   f"{db} ({reason.strip().rstrip('.')})")  # fmt: skip


def credentials_problem(settings: Settings, sources: Mapping[str, str], reason: str) -> Problem:
    """Names the setting that holds the password Redis refused, and where it came from."""
    in_url = settings.redis_url is not None and urlsplit(settings.redis_url).password is not None
    spec = SPECS_BY_FIELD["redis_url" if in_url else "redis_password"]
    key, source = _key_and_source(spec, sources.get(spec.field, "default"))
    given = in_url or settings.redis_password is not None
    target = redis_target(settings)
    expected = f"the password {target} {'accepts' if given else 'requires'}"
    got = f"{'one it rejects' if given else 'none'} ({reason.strip().rstrip('.')})"
    return Problem(key, source, expected, got)


def _key_and_source(spec: SettingSpec, label: str) -> tuple[str, str]:
    """(key as the user wrote it, source) from a ResolvedSettings.sources label."""
    if label in ("default", "command line"):
        return (spec.env if label == "default" else spec.field), label
    if label.startswith("environment "):
        return spec.env, "environment"
    if label.startswith("file "):
        return spec.key, label
    source, _, key = label.rpartition(" ")  # "<framework source> KEY"
    return key, source


# --- pushing (in the master) --------------------------------------------------------------------


class RedisPusher:
    """Pushes the registry's families to Redis from a daemon thread of the master."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        log: Log,
        *,
        instance_id: str,
        epoch: int | None = None,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self._epoch = int(time.time()) if epoch is None else epoch
        self._seq = 0
        self._settings = settings
        self._registry = registry
        self._log = log
        self._on_fault = on_fault
        self._target = redis_target(settings)
        self._keys = (
            instance_key(settings.redis_key_prefix, instance_id),
            index_key(settings.redis_key_prefix),
        )
        self._retention_ms = max(1, round(settings.redis_retention * 1000))
        self._stopping = threading.Event()
        # One push at a time: a final push must never be overtaken by an older snapshot.
        self._lock = threading.Lock()
        self._client: Redis | None = None
        self._script: Script | None = None
        self._failing = False
        self._collect_failed = False
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()

    @classmethod
    def for_master(
        cls,
        settings: Settings,
        registry: CollectorRegistry,
        log: Log,
        *,
        start_time: float,
        on_fault: Callable[[str], None] | None = None,
    ) -> RedisPusher:
        instance_id = settings.redis_instance_id or default_instance_id(start_time=start_time)
        return cls(settings, registry, log, instance_id=instance_id, epoch=int(start_time),
                   on_fault=on_fault)  # fmt: skip

    def start(self) -> None:
        if self._thread is not None:
            return
        self._owner_pid = os.getpid()
        # Workers are forked while this thread may hold a connection: close each child's copy
        # of the socket (close only; shutdown would cut the master's connection too).
        ref = weakref.ref(self)

        def forget_in_child() -> None:
            pusher = ref()
            if pusher is not None:
                pusher._forget_inherited_connection()

        os.register_at_fork(after_in_child=forget_in_child)
        self._log.info(
            "gunicorn-prom-ext: pushing metrics to %s every %gs as instance %r",
            self._target, self._settings.redis_push_interval, self.instance_id,
        )  # fmt: skip
        self._thread = threading.Thread(
            target=self._run, name="gunicorn-prom-ext-redis", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2 * SOCKET_TIMEOUT + 1) -> None:
        """Stop the thread, then push once more: the exit's final totals."""
        try:
            self._stopping.set()
            if os.getpid() != self._owner_pid:
                return
            if self._thread is not None:
                self._thread.join(timeout)
            self.push()
            with self._lock:
                if self._client is not None:
                    self._client.close()
                    self._client = None
        except Exception:
            self._log.exception("gunicorn-prom-ext: error while stopping the Redis pusher")

    def push(self) -> bool:
        """One snapshot, one round trip. False (logged once per outage, counted) on failure."""
        from redis.exceptions import RedisError

        with self._lock:
            self._seq += 1
            try:
                blob = serialise(self._registry.collect(), self.instance_id, self._epoch, self._seq)
            except Exception:
                self._fault()
                if not self._collect_failed:
                    self._collect_failed = True
                    self._log.exception("gunicorn-prom-ext: collecting metrics for Redis failed")
                return False
            try:
                script = self._connected_script()
                args: list[bytes | int | str] = [
                    blob, self._retention_ms, self.instance_id, self._epoch, self._seq,
                ]  # fmt: skip
                script(keys=self._keys, args=args)
            except RedisError as exc:
                self._fault()
                if not self._failing:
                    self._failing = True
                    self._log.error(
                        "gunicorn-prom-ext: Redis unreachable at %s (%s: %s); retrying every "
                        "%gs, nothing counted meanwhile is lost",
                        self._target, type(exc).__name__, exc,
                        self._settings.redis_push_interval,
                    )  # fmt: skip
                return False
            if self._failing:
                self._failing = False
                self._log.info("gunicorn-prom-ext: Redis at %s reconnected; pushes caught up",
                               self._target)  # fmt: skip
            return True

    def _run(self) -> None:
        # The first push right away lists the instance; the rest every interval.
        interval = self._settings.redis_push_interval
        while True:
            try:
                self.push()
            except Exception:  # push() contains its faults; this is the last line of defence
                self._log.exception("gunicorn-prom-ext: Redis push failed")
            if self._stopping.wait(interval):
                return

    def _connected_script(self) -> Script:
        if self._client is None or self._script is None:
            self._client = make_client(self._settings)
            self._script = self._client.register_script(_PUSH_SCRIPT)
        return self._script

    def _forget_inherited_connection(self) -> None:
        self._stopping.set()  # a worker's copy never pushes
        connection = getattr(self._client, "connection", None)
        if connection is not None:
            # In a child redis-py only closes the socket (it shuts down only in its owner).
            connection.disconnect()
        self._client = None
        self._script = None

    def _fault(self) -> None:
        if self._on_fault is None:
            return
        try:
            self._on_fault(FAULT_KIND)
        except Exception:
            self._log.debug("gunicorn-prom-ext: on_fault(%r) failed", FAULT_KIND, exc_info=True)
