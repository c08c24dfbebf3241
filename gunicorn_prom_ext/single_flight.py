"""Concurrent callers asking for the same thing share one computation of it.

The metrics page is rendered in the gunicorn master, under the directory's shared lock,
and a big one takes a second of CPU or more. Rendered once per scrape, a few dozen
concurrent scrapes (the endpoint holds up to ``max_connections``) starve the master's
main loop of the GIL and keep a fold, which the main loop runs when a worker dies, waiting
for the lock: the dead worker is not replaced for as long as they keep coming. Shared,
concurrent scrapes cost one rendering, and a fold waits for one at most.

A caller joins only a computation that has not finished yet, so one caller's sequential
requests never get a page older than its previous one (no counter seems to go back).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self, event: Any) -> None:
        self.done = event
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """``run(key, compute)``: compute, or wait for the same key's computation under way."""

    def __init__(self, threading: Any) -> None:
        """``threading``: the module to make locks and events with (natives.py)."""
        self._threading = threading
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight[T]] = {}

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight(self._threading.Event())
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        try:
            flight.result = compute()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
