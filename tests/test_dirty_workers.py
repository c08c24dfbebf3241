"""gunicorn 25+ dirty workers: a server that uses them starts, serves and counts its HTTP
requests; no dirty process (the first arbiter, or one the master respawns) holds the
metrics port."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

import psutil
import pytest
from harness import Gunicorn

pytestmark = [pytest.mark.slow]
gunicorn_has_dirty_workers = pytest.mark.skipif(
    tuple(int(p) for p in __import__("gunicorn").__version__.split(".")[:2]) < (25, 0),
    reason="dirty workers came with gunicorn 25.0",
)
GunicornFactory = Callable[..., Gunicorn]


def _holders_of_port(port: int) -> set[int]:
    """Processes with a socket listening on the port (their descriptors, not just one)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for proc in psutil.process_iter():
        try:
            fd_dir = f"/proc/{proc.pid}/fd"
            for fd in os.listdir(fd_dir):
                if os.readlink(os.path.join(fd_dir, fd)) in inodes:
                    holders.add(proc.pid)
        except OSError:
            continue
    return holders


@gunicorn_has_dirty_workers
def test_dirty_workers_serve_count_and_never_hold_the_metrics_port(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("dirty_app:app", "--dirty-workers", "1", "--dirty-app",
                         "dirty_app:Squarer", workers=2).start()  # fmt: skip
    for _ in range(5):
        status, body = g.request("/")
        assert status == 200 and json.loads(body)["result"] == 49
    count = g.wait_for(lambda: g.value(
        "http_server_request_duration_seconds_count", http_request_method="GET",
        http_route="/square", http_response_status_code="200") == 5.0)  # fmt: skip
    assert count
    assert _holders_of_port(g.metrics_port) == {g.master_pid}

    # The master respawns a dirty arbiter that died: after when_ready, so it is forked
    # while the endpoint serves; it must close its copy of the endpoint's socket.
    master = psutil.Process(g.master_pid)

    def dirty_arbiters() -> list[psutil.Process]:
        # The HTTP workers have no children; the dirty arbiter has its dirty worker.
        return [p for p in master.children() if p.children()]

    (arbiter,) = g.wait_for(dirty_arbiters)
    arbiter.send_signal(signal.SIGKILL)
    (respawned,) = g.wait_for(lambda: [p for p in dirty_arbiters() if p.pid != arbiter.pid],
                              timeout=20)  # fmt: skip
    g.wait_for(lambda: respawned.children(), timeout=20)
    assert _holders_of_port(g.metrics_port) == {g.master_pid}
    assert g.metrics_response()[0] == 200
    assert g.stop() == 0
