"""The master's push of its metrics to Redis, from a thread of its own, never a request.

Every ``REDIS_PUSH_INTERVAL`` seconds and once more at exit, the registry the endpoint
serves is collected and written in one round trip (redis_scripts.py); the totals are
cumulative, so a push after an outage catches up on everything. A push Redis refuses (the
snapshot in place is newer, or its key is of the wrong type) is said once and counted.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.storage.redis import (
    FAULT_KIND,
    SOCKET_TIMEOUT,
    STALE_FAULT_KIND,
    default_instance_id,
    index_key,
    instance_key,
    make_client,
    redis_target,
)
from gunicorn_prom_ext.storage.redis_scripts import PUSH_SCRIPT
from gunicorn_prom_ext.storage.snapshot import MAX_SNAPSHOT_BYTES, serialise

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry
    from redis import Redis
    from redis.commands.core import Script


# The push script's KEYS, by position: what each is, and the Redis type it must have.
_KEY_ROLES = {1: ("instance key", "string"), 2: ("index", "sorted set")}


class RedisPusher:
    """Pushes the registry's families to Redis from a daemon thread of the master.

    Each push ends in one of four states: accepted, Redis unreachable, Redis refusing it
    (an error reply, or a key of the wrong type under the prefix), or refused as stale (the
    snapshot in place is newer). Entering a failing state is logged once, leaving it once;
    every failed push is counted (``redis_push``, ``redis_stale``). A stale refusal is never
    overridden: the snapshot in place may be a live master's (two masters configured with
    one REDIS_INSTANCE_ID), and taking turns would make its counters jump back and forth.
    """

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
        self._epoch = int(time.time() * 1000) if epoch is None else epoch
        self._seq = 0
        self.owner = _owner_token()
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
        self._state = "accepted"
        self._refused = 0  # pushes refused in the current failing state
        self._collect_failed = False
        self._oversize_warned = False
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
        # The epoch in milliseconds: a master restarted within the second (a container's
        # pid 1, with a configured id) still outranks the snapshot its predecessor left.
        return cls(settings, registry, log, instance_id=instance_id,
                   epoch=int(start_time * 1000), on_fault=on_fault)  # fmt: skip

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
        """One snapshot, one round trip. False (logged once per episode, counted) unless
        Redis took it."""
        from redis.exceptions import RedisError, ResponseError

        with self._lock:
            self._seq += 1
            try:
                blob = serialise(self._registry.collect(), self.instance_id, self._epoch,
                                 self._seq, self.owner)  # fmt: skip
            except Exception:
                self._fault(FAULT_KIND)
                if not self._collect_failed:
                    self._collect_failed = True
                    self._log.exception("gunicorn-prom-ext: collecting metrics for Redis failed")
                return False
            self._warn_if_oversize(len(blob))
            try:
                script = self._connected_script()
                args: list[bytes | int | str] = [
                    blob, self._retention_ms, self.instance_id, self._epoch, self._seq,
                    self.owner,
                ]  # fmt: skip
                result = script(keys=self._keys, args=args)
            except ResponseError as exc:  # Redis answered: OOM, READONLY, NOAUTH, ...
                return self._failed("refused", FAULT_KIND, f"{type(exc).__name__}: {exc}")
            except RedisError as exc:
                return self._failed("unreachable", FAULT_KIND, f"{type(exc).__name__}: {exc}")
            if isinstance(result, list):
                return self._refused_by_script(result)
            self._accepted()
            return True

    def _refused_by_script(self, result: Sequence[Any]) -> bool:
        what = _text(result[0])
        if what == "stale":
            return self._failed("stale", STALE_FAULT_KIND, self._describe_stale(result[1:]))
        role, expected = _KEY_ROLES.get(int(result[1]), ("key", "?"))
        key = self._keys[int(result[1]) - 1]
        detail = (f"the {role} {key!r} is a Redis {_text(result[2])}, where this package "
                  f"keeps a {expected}: someone else's key? Delete it, or choose another "
                  f"REDIS_KEY_PREFIX")  # fmt: skip
        return self._failed("wrongtype", FAULT_KIND, detail)

    def _describe_stale(self, details: Sequence[Any]) -> str:
        epoch, seq, owner, pttl = (_text(details[0]), _text(details[1]), _text(details[2]),
                                   int(details[3]))  # fmt: skip
        expiry = (f"it expires in {pttl / 1000:.0f}s" if pttl >= 0
                  else "it has no expiry, so it stays until deleted")  # fmt: skip
        # The owner is whatever the key holds: repr keeps a newline in it out of the log.
        holder = f"master {owner!r}" if owner else "a writer that is not a master of this version"
        return (
            f"{self._keys[0]!r} holds a newer snapshot (epoch {_epoch_text(epoch)}, push {seq}, "
            f"from {holder}) than this master's (epoch {_epoch_text(str(self._epoch))}, push "
            f"{self._seq}, master {self.owner}); {expiry}. Another master pushes as instance "
            f"{self.instance_id!r} (after a USR2 that is the new master; otherwise give each "
            f"master its own REDIS_INSTANCE_ID), or something else wrote that key"
        )

    def _failed(self, state: str, kind: str, detail: str) -> bool:
        self._fault(kind)
        if state != self._state:
            self._state, self._refused = state, 0
            interval = self._settings.redis_push_interval
            if state == "unreachable":
                self._log.error(
                    "gunicorn-prom-ext: Redis unreachable at %s (%s); retrying every %gs, "
                    "nothing counted meanwhile is lost", self._target, detail, interval,
                )  # fmt: skip
            elif state == "stale":
                self._log.warning(
                    "gunicorn-prom-ext: Redis at %s refuses this master's pushes as stale: %s. "
                    "Each refused push is counted in gunicorn_prom_ext_faults_total"
                    '{kind="%s"}', self._target, detail, kind,
                )  # fmt: skip
            else:
                self._log.error(
                    "gunicorn-prom-ext: Redis at %s refuses the push: %s; retrying every %gs",
                    self._target, detail, interval,
                )  # fmt: skip
        self._refused += 1
        return False

    def _accepted(self) -> None:
        state, self._state = self._state, "accepted"
        if state == "unreachable":
            self._log.info("gunicorn-prom-ext: Redis at %s reconnected; pushes caught up",
                           self._target)  # fmt: skip
        elif state != "accepted":
            self._log.info(
                "gunicorn-prom-ext: Redis at %s accepts this master's pushes again, after %d "
                "refused; pushes caught up", self._target, self._refused,
            )  # fmt: skip

    def _warn_if_oversize(self, size: int) -> None:
        if size > MAX_SNAPSHOT_BYTES and not self._oversize_warned:
            self._oversize_warned = True
            self._log.warning(
                "gunicorn-prom-ext: this instance's snapshot is %d bytes, more than the %d "
                "gunicorn-prom-ext serve reads: it will skip this instance. Fewer label "
                "values (routes, status codes) make it smaller", size, MAX_SNAPSHOT_BYTES,
            )  # fmt: skip

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
            self._script = self._client.register_script(PUSH_SCRIPT)
        return self._script

    def _forget_inherited_connection(self) -> None:
        self._stopping.set()  # a worker's copy never pushes
        connection = getattr(self._client, "connection", None)
        if connection is not None:
            # In a child redis-py only closes the socket (it shuts down only in its owner).
            connection.disconnect()
        self._client = None
        self._script = None

    def _fault(self, kind: str) -> None:
        if self._on_fault is None:
            return
        try:
            self._on_fault(kind)
        except Exception:
            self._log.debug("gunicorn-prom-ext: on_fault(%r) failed", kind, exc_info=True)


def _owner_token() -> str:
    """``<host>:<pid>:<random>``: says which master wrote a snapshot, and tells two apart
    that started in the same millisecond. Only characters the push script can match."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64]
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


def _epoch_text(epoch: str) -> str:
    """A push epoch (a master's start, in ms) with the time it stands for, if it is one."""
    try:
        started = datetime.fromtimestamp(int(epoch) / 1000, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return epoch
    return f"{epoch}, started {started:%Y-%m-%d %H:%M:%S} UTC"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
