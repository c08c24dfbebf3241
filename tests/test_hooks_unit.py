"""Pure parts of the hooks: chaining at gunicorn's arity, slots, exit reasons."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import validate_callable, validate_post_request

from gunicorn_prom_ext.chaining import HOOK_ARITY, chain
from gunicorn_prom_ext.server import (
    ExitNotes,
    WorkerSlots,
    exit_reason_in_master,
    exit_reason_in_worker,
)


@pytest.mark.parametrize("name", sorted(HOOK_ARITY))
def test_chained_hook_passes_gunicorns_arity_check(name: str) -> None:
    arity = HOOK_ARITY[name]
    calls: list[str] = []

    def ours(*args: Any) -> None:
        calls.append("ours")

    def theirs(*args: Any) -> None:
        calls.append("theirs")

    hook = chain(name, ours, _with_arity(arity, theirs))
    validate = validate_post_request if name == "post_request" else validate_callable(arity)
    hook = validate(hook)
    hook(*range(arity))
    first = "theirs" if name in ("worker_exit", "on_exit") else "ours"
    assert calls[0] == first
    assert sorted(calls) == ["ours", "theirs"]


def _with_arity(arity: int, f: Any) -> Any:
    return {
        1: lambda a: f(a),
        2: lambda a, b: f(a, b),
        3: lambda a, b, c: f(a, b, c),
        4: lambda a, b, c, d: f(a, b, c, d),
    }[arity]


def test_post_request_with_two_arguments_is_called_as_gunicorn_would() -> None:
    seen: list[tuple[Any, ...]] = []

    def theirs(worker: Any, req: Any) -> None:
        seen.append((worker, req))

    hook = chain("post_request", lambda *a: None, theirs)
    hook("w", "r", {}, None)
    assert seen == [("w", "r")]


def test_their_exception_reaches_gunicorn_and_ours_still_ran() -> None:
    ran: list[str] = []

    def theirs(arbiter: Any, worker: Any) -> None:
        raise ValueError("theirs")

    hook = chain("worker_exit", lambda a, w: ran.append("ours"), theirs)
    with pytest.raises(ValueError, match="theirs"):
        hook(1, 2)
    assert ran == ["ours"]


def test_slots_are_lowest_free_and_survive_a_reload() -> None:
    slots = WorkerSlots()
    assert [slots.assign(age) for age in (1, 2, 3)] == [0, 1, 2]
    slots.release(2)
    assert slots.assign(4) == 1
    slots.retire_all()  # HUP: 1, 3, 4 are being replaced
    assert [slots.assign(age) for age in (5, 6, 7)] == [0, 1, 2]
    for age in (1, 3, 4):
        slots.release(age)
    assert [slots.slot_of(age) for age in (5, 6, 7)] == [0, 1, 2]
    assert slots.assign(8) == 3


def test_exit_reasons() -> None:
    notes = ExitNotes()
    notes.clear(70000)
    assert notes.read(70000) is None
    notes.leave(70000, "max_requests")
    assert notes.read(70000) == "max_requests"
    aborted = SimpleNamespace(aborted=True)
    assert exit_reason_in_master(aborted, "error") == "timeout"
    assert exit_reason_in_master(SimpleNamespace(aborted=False), None) == "killed"
    assert exit_reason_in_master(SimpleNamespace(aborted=False), "graceful") == "graceful"


def test_exit_reason_seen_from_inside_the_worker() -> None:
    worker = SimpleNamespace(nr=3, max_requests=sys.maxsize)
    assert exit_reason_in_worker(worker) == "graceful"
    worker.max_requests = 3
    assert exit_reason_in_worker(worker) == "max_requests"
    try:
        raise SystemExit(-1)
    except SystemExit:
        assert exit_reason_in_worker(worker) == "error"
    try:
        raise SystemExit(0)
    except SystemExit:
        assert exit_reason_in_worker(worker) == "max_requests"
