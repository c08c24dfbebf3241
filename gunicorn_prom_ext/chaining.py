"""Run this package's hook and a project's own under one name, as gunicorn expects.

gunicorn takes one function per hook and checks its number of positional parameters
(``config.validate_callable``); a chain must keep that arity exactly, and let the
project's exceptions reach gunicorn as if its hook were installed alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Hook = Callable[..., Any]

# Positional arity gunicorn checks for each hook (config.validate_callable).
HOOK_ARITY: Mapping[str, int] = {
    "on_starting": 1,
    "on_reload": 1,
    "when_ready": 1,
    "pre_fork": 2,
    "post_fork": 2,
    "post_worker_init": 1,
    "worker_int": 1,
    "worker_abort": 1,
    "pre_exec": 1,
    "pre_request": 2,
    "post_request": 4,
    "child_exit": 2,
    "worker_exit": 2,
    "nworkers_changed": 3,
    "on_exit": 1,
}
# For these the project's hook runs first and ours last (in a finally), so theirs still
# sees the metrics directory and files in place.
_TEARDOWN_HOOKS = frozenset({"worker_exit", "on_exit"})


def _normalised(name: str, theirs: Hook) -> Hook:
    """gunicorn accepts post_request with 2, 3 or 4 arguments; call it as gunicorn would."""
    if name != "post_request":
        return theirs
    from gunicorn.config import validate_post_request

    adapted: Hook = validate_post_request(theirs)
    return adapted


def chain(name: str, ours: Hook, theirs: Hook) -> Hook:
    """One hook of gunicorn's exact arity that runs ours and the project's.

    Ours never raises, so the project's exceptions reach gunicorn exactly as if theirs
    were installed alone.
    """
    theirs = _normalised(name, theirs)
    teardown = name in _TEARDOWN_HOOKS

    def run(*args: Any) -> Any:
        if teardown:
            try:
                return theirs(*args)
            finally:
                ours(*args)
        ours(*args)
        return theirs(*args)

    return with_arity(name, run, qualname=f"chained_{name}")


def with_arity(name: str, run: Callable[..., Any], *, qualname: str) -> Hook:
    """``run`` as a function of exactly the positional arity gunicorn checks for ``name``
    (it counts parameters, so ``*args`` will not do)."""
    wrappers: dict[int, Hook] = {
        1: lambda a: run(a),
        2: lambda a, b: run(a, b),
        3: lambda a, b, c: run(a, b, c),
        4: lambda a, b, c, d: run(a, b, c, d),
    }
    wrapper = wrappers[HOOK_ARITY[name]]
    wrapper.__name__ = name
    wrapper.__qualname__ = qualname
    return wrapper
