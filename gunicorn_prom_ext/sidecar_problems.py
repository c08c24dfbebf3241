"""The sidecar's bookkeeping: problems logged once while they last, and reads shared.

A hostile index may list a hundred thousand broken instances, so the memory of what was
logged is bounded, and a problem that cleared is forgotten (logged again if it returns).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from gunicorn_prom_ext.log import Log

T = TypeVar("T")
MAX_LOGGED = 256


class Round:
    """The problems one read of Redis found: a count per fault kind, a message per key."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.problems: dict[str, tuple[str, tuple[object, ...]]] = {}

    def add(self, kind: str, key: str, message: str, *args: object) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.problems.setdefault(key, (message, args))


class ProblemLog:
    """Logs each problem (by key) once while it lasts; remembers at most ``limit``."""

    def __init__(self, log: Log, limit: int = MAX_LOGGED) -> None:
        self._log = log
        self._limit = limit
        self._logged: set[str] = set()
        self._overflowing = False

    def end_round(self, found: Round) -> None:
        self._logged.intersection_update(found.problems)  # cleared ones are forgotten
        unlogged = 0
        for key, (message, args) in found.problems.items():
            if key in self._logged:
                continue
            if len(self._logged) >= self._limit:
                unlogged += 1
                continue
            self._logged.add(key)
            self._log.error(message, *args)
        if unlogged and not self._overflowing:
            self._log.error(
                "%d more problems, not logged one by one (at most %d are remembered); each is "
                "counted in the sidecar's faults metric", unlogged, self._limit,
            )  # fmt: skip
        self._overflowing = unlogged > 0


class JoinedReadFailed(Exception):
    """The read a caller joined failed; ``__cause__`` is the leader's exception."""


class _Flight(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class Shared(Generic[T]):
    """Runs ``fn`` for the first caller; callers arriving while it runs get its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flight: _Flight[T] | None = None

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            flight = self._flight
            leading = flight is None
            if flight is None:
                flight = self._flight = _Flight()
        if not leading:
            flight.done.wait()
            if flight.error is not None:
                # A new exception per caller: the leader's is being raised in its own thread.
                raise JoinedReadFailed(f"{type(flight.error).__name__}: {flight.error}") from (
                    flight.error
                )
            return flight.result  # type: ignore[return-value]  # set whenever error is None
        try:
            flight.result = fn()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flight = None
            flight.done.set()
