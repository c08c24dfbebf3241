"""Redis: one place for every instance of a service, never on the request path.

Workers keep recording into their local files. A thread of the master pushes this
instance's merged metrics (what its own endpoint serves) to Redis every few seconds and once
more at exit; the totals are cumulative, so a push after an outage catches up on everything.
``gunicorn-prom-ext serve`` reads them back and labels every series with its instance.

Keys, for a key prefix P (one per service) and an instance id I:

- ``P:instance:I``: the JSON snapshot of I's metric families (storage/snapshot.py);
  expires after I's retention.
- ``P:instances``: sorted set of instance ids, scored by the Redis time (ms) until which
  each stays listed (its last push plus its retention).

Both are written by one script (storage/redis_scripts.py), which refuses a push older than
the snapshot in place: the pusher (storage/redis_push.py) says so once and counts every
refused push. This module holds the names, the connection and the start-up check.

Imported only once the multiprocess directory is set (it imports prometheus_client);
redis-py, an optional extra, is imported only when a client is made.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from gunicorn_prom_ext.settings import SPECS_BY_FIELD, ConfigError, Problem, Settings, SettingSpec
from gunicorn_prom_ext.storage.snapshot import deserialise as deserialise  # tools read blobs

if TYPE_CHECKING:
    from redis import Redis

FAULT_KIND = "redis_push"  # a push Redis did not take: unreachable, or an error reply
STALE_FAULT_KIND = "redis_stale"  # a push refused: the snapshot in place is newer
INSTANCE_LABEL = "gunicorn_instance"
SERVICE_LABEL = "gunicorn_service"
# Connect and read timeouts: a slow or silent Redis delays a push (or a sidecar scrape) by
# about this much, never a request, and never the master's shutdown by more than twice that.
SOCKET_TIMEOUT = 1.0
INDEX_SUFFIX = ":instances"


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
