"""The real threading, socket, select, ssl and time modules, even when patched.

gunicorn 24 and 25 monkey-patch eventlet into the master as soon as the eventlet worker
class is imported. The metrics endpoint's threads then become green threads that never
get to run (the master's main loop does not yield to eventlet's hub): scrapes hang. The
endpoint serves from a real OS thread with real sockets instead, taken back from
eventlet.
"""

from __future__ import annotations

import select as _select
import socket as _socket
import ssl as _ssl
import sys
import threading as _threading
import time as _time
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Natives:
    threading: ModuleType
    socket: ModuleType
    select: ModuleType
    ssl: ModuleType
    time: ModuleType


def natives() -> Natives:
    """The unpatched modules (the usual ones when nothing is patched)."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        original = patcher.original
        return Natives(original("threading"), original("socket"), original("select"),
                       original("ssl"), original("time"))  # fmt: skip
    # gevent patched into the master by a config file is not a problem: its hub runs
    # whenever the master's main loop sleeps, so green threads serve scrapes in time.
    return Natives(_threading, _socket, _select, _ssl, _time)
