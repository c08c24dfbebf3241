"""Objects that must act around a fork: the master forks workers while they are in use.

``os.register_at_fork`` cannot be undone, so the object is held weakly: one that is gone
(a stopped endpoint, say) costs a fork nothing.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def before_fork(self) -> None: ...
    def after_fork_in_parent(self) -> None: ...
    def after_fork_in_child(self) -> None: ...


def act_around_forks(target: ForkAware) -> None:
    """Call the target's three methods around every fork of this process from now on."""
    ref = weakref.ref(target)

    def before() -> None:
        if (obj := ref()) is not None:
            obj.before_fork()

    def after_in_parent() -> None:
        if (obj := ref()) is not None:
            obj.after_fork_in_parent()

    def after_in_child() -> None:
        if (obj := ref()) is not None:
            obj.after_fork_in_child()

    os.register_at_fork(
        before=before, after_in_parent=after_in_parent, after_in_child=after_in_child
    )
