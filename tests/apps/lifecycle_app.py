"""testapp plus one path that makes the serving worker die through an exception after boot.

``/lifecycle/close-listener`` closes the worker's own copy of the listening socket (as a buggy
library that closes a descriptor it does not own would) and answers 200. The sync worker's
next ``accept()`` then fails with EBADF, which gunicorn does not expect: it logs "Exception in
worker process" and the worker exits with status -1 (255), through ``worker_exit``.
Only that worker's descriptor is closed: the master and the other workers keep listening.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable

from testapp import ROUTE_KEY, Environ, StartResponse
from testapp import app as testapp

CLOSE_LISTENER_PATH = "/lifecycle/close-listener"


def _close_listeners(port: int) -> int:
    closed = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            probe = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a dup
        except OSError:
            continue  # not a socket (or already gone)
        with probe:
            try:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                bound = probe.getsockname()
            except OSError:
                continue
        if listening and isinstance(bound, tuple) and bound[1] == port:
            with contextlib.suppress(OSError):
                os.close(fd)
                closed += 1
    return closed


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == CLOSE_LISTENER_PATH:
        environ[ROUTE_KEY] = CLOSE_LISTENER_PATH
        closed = _close_listeners(int(environ["SERVER_PORT"]))
        body = f"closed {closed}".encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    return testapp(environ, start_response)
