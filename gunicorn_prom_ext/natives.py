"""The real threading, socket, select, ssl and time modules, even when patched.

gunicorn 24 and 25 monkey-patch eventlet into the master as soon as the eventlet worker
class is imported. The metrics endpoint's threads then become green threads that never
get to run (the master's main loop does not yield to eventlet's hub): scrapes hang. The
endpoint serves from a real OS thread with real sockets instead, taken back from
eventlet.
"""

from __future__ import annotations

import functools
import importlib
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
    time: ModuleType
    patched: bool = False  # eventlet patched these in place; the fields hold the originals

    @functools.cached_property
    def ssl(self) -> ModuleType:
        """An ssl module whose sockets are real ones (made on first use: only the
        endpoint's TLS needs it)."""
        return _ssl_over(self.socket) if self.patched else _ssl


def natives() -> Natives:
    """The unpatched modules (the usual ones when nothing is patched)."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        original = patcher.original
        return Natives(original("threading"), original("socket"), original("select"),
                       original("time"), patched=True)  # fmt: skip
    # gevent patched into the master by a config file is not a problem: its hub runs
    # whenever the master's main loop sleeps, so green threads serve scrapes in time.
    return Natives(_threading, _socket, _select, _time)


def _ssl_over(real_socket: ModuleType) -> ModuleType:
    """A fresh copy of ssl, imported while ``socket`` is the real module.

    eventlet's ``original("ssl")`` is not enough: it imports ssl again next to the patched
    socket module, so its SSLSocket derives from eventlet's GreenSocket and every TLS
    handshake fails ("_wrap_socket() argument 'sock' must be _socket.socket"). eventlet's
    own ``original()`` swaps sys.modules the same way for the modules it knows about."""
    saved = {name: sys.modules.get(name) for name in ("socket", "ssl")}
    try:
        sys.modules["socket"] = real_socket
        sys.modules.pop("ssl", None)
        return importlib.import_module("ssl")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
