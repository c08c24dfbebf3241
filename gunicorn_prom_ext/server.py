
"""What the master knows about its workers: slots, spawns, exits by reason, reloads.

Hooks in the master's main loop update a ServerState; the endpoint's thread reads a
snapshot of it at scrape time. Nothing here imports prometheus_client.
"""

from __future__ import annotations

import mmap
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from gunicorn_prom_ext.natives import natives

EXIT_REASONS = ("graceful", "max_requests", "timeout", "killed", "error")
_NOTE_CODES = {"graceful": 1, "max_requests": 2, "error": 3}
_NOTE_REASONS = {code: reason for reason, code in _NOTE_CODES.items()}


class ExitNotes:
    """Shared memory, mapped before the first fork, where a worker leaves why it exits.

    child_exit is not given the exit status, so the worker says it itself from
    worker_exit. A worker that never gets there (SIGKILL, OOM, segfault) leaves no
    note: that absence is how the master knows it was killed. Notes are indexed by the
    worker's age (gunicorn's spawn counter), which is unique within one master.
    """

    SIZE = 1 << 16

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, self.SIZE)  # anonymous and MAP_SHARED: shared with children

    def clear(self, age: int) -> None:
        self._map[age % self.SIZE] = 0

    def leave(self, age: int, reason: str) -> None:
        self._map[age % self.SIZE] = _NOTE_CODES[reason]

    def read(self, age: int) -> str | None:
        return _NOTE_REASONS.get(self._map[age % self.SIZE])


def exit_reason_in_worker(worker: Any, served: int = 0) -> str:
    """Why this worker is exiting, judged from inside it (called from worker_exit).

    worker_exit runs in a ``finally``: an exception on its way out is visible here.
    ``served``: requests counted elsewhere, for a worker class that enforces
    --max-requests without counting in ``worker.nr`` (uvicorn's).
    """
    exc = sys.exc_info()[1]
    if exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None)):
        return "error"
    served = max(getattr(worker, "nr", 0), served)
    if served >= getattr(worker, "max_requests", sys.maxsize):
        return "max_requests"
    return "graceful"


def exit_reason_in_master(worker: Any, note: str | None, *, reaped_elsewhere: bool = False) -> str:
    """``reaped_elsewhere``: gunicorn found the process gone when it signalled it, so a
    timeout's abort (``aborted``) never reached it: its own note, if any, says why it went."""
    if getattr(worker, "aborted", False) and not reaped_elsewhere:
        return "timeout"
    return note if note is not None else "killed"


class WorkerSlots:
    """Stable, small worker labels: each new worker takes the lowest free slot.

    On HUP every current worker is about to be replaced, so its slot may be taken by
    its replacement at once; labels then stay 0..N-1 instead of climbing to 2N-1.
    """

    def __init__(self) -> None:
        self._slot_by_age: dict[int, int] = {}
        self._retiring: set[int] = set()

    def assign(self, age: int) -> int:
        taken = {s for a, s in self._slot_by_age.items() if a not in self._retiring}
        slot = 0
        while slot in taken:
            slot += 1
        self._slot_by_age[age] = slot
        return slot

    def release(self, age: int) -> None:
        self._slot_by_age.pop(age, None)
        self._retiring.discard(age)

    def retire_all(self) -> None:
        self._retiring = set(self._slot_by_age)

    def slot_of(self, age: int) -> int | None:
        return self._slot_by_age.get(age)


@dataclass
class ServerSnapshot:
    start_time: float
    spawns: int
    reloads: int
    exits: dict[str, int]
    desired: int
    slots: dict[int, int]  # worker age -> slot, newest owner of each slot only


@dataclass
class ServerState:
    start_time: float = field(default_factory=time.time)
    spawns: int = 0
    reloads: int = 0
    desired: int = 0
    exits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXIT_REASONS, 0))
    slots: WorkerSlots = field(default_factory=WorkerSlots)
    notes: ExitNotes = field(default_factory=ExitNotes)
    # Hooks run in the master's main thread, scrapes in the endpoint's thread. Reentrant:
    # gunicorn 22 and 23 run child_exit in a signal handler, maybe while pre_fork holds it.
    # Real, not green, even in a master eventlet patched: scrapes take it from real threads.
    lock: threading.RLock = field(default_factory=lambda: natives().threading.RLock())

    def worker_spawning(self, age: int) -> None:
        with self.lock:
            self.spawns += 1
            self.slots.assign(age)
        self.notes.clear(age)

    def worker_exited(self, worker: Any, *, reaped_elsewhere: bool = False) -> str:
        note = self.notes.read(worker.age)
        reason = exit_reason_in_master(worker, note, reaped_elsewhere=reaped_elsewhere)
        with self.lock:
            self.exits[reason] += 1
            self.slots.release(worker.age)
        return reason

    def reloaded(self) -> None:
        with self.lock:
            self.reloads += 1
            self.slots.retire_all()

    def workers_desired(self, count: int) -> None:
        with self.lock:
            self.desired = count

    def snapshot(self, live_ages: list[int]) -> ServerSnapshot:
        with self.lock:
            owners: dict[int, int] = {}
            # Oldest first, so a replacement owns a slot it shares with a retiring worker.
            for age in sorted(live_ages):
                slot = self.slots.slot_of(age)
                if slot is not None:
                    owners[slot] = age
            return ServerSnapshot(
                start_time=self.start_time,
                spawns=self.spawns,
                reloads=self.reloads,
                exits=dict(self.exits),
                desired=self.desired,
                slots={age: slot for slot, age in owners.items()},
            )
