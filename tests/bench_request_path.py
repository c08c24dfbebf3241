"""The request path in process: what pre_request + post_request cost, without the noise.

A script, not a pytest test:

    .venv/bin/python tests/bench_request_path.py [--rounds 9] [--requests 50000]

A real gunicorn Arbiter runs the hooks' master side (settings, directory), a real
SyncWorker object goes through pre_fork/post_fork in this same process, and a request
parsed by gunicorn's own parser, with the Response object gunicorn built for it (headers
sent, body written), goes through pre_request and post_request again and again. The same
work done with prometheus_client's own metrics (three labelled Histograms and a livesum
Gauge, in multiprocess mode, as an exporter built on it records a request) is timed in
the same rounds for comparison. Rounds alternate between the variants; each figure is
the median of the rounds, with the spread (lowest..highest round) beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

Loop = Callable[[int], None]


def build(directory: str) -> dict[str, Loop]:
    """The variants, each a function running n requests."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from gunicorn.http.parser import RequestParser
    from gunicorn.http.wsgi import create
    from gunicorn.workers.sync import SyncWorker

    from gunicorn_prom_ext.hooks import PrometheusHooks, install_hooks

    hooks = PrometheusHooks()

    class App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            namespace: dict[str, Any] = {}
            install_hooks(namespace, hooks)
            for name, fn in namespace.items():
                self.cfg.set(name, fn)

        def load(self) -> Any:
            return lambda environ, start_response: [b"hello"]

    app = App()
    arbiter = Arbiter(app)  # runs nworkers_changed: the hooks' master side starts here
    worker = SyncWorker(1, os.getpid(), [], app, 30, app.cfg, arbiter.log)
    hooks.pre_fork(arbiter, worker)
    hooks.post_fork(arbiter, worker)  # this process is "the worker" from here on

    client, server = socket.socketpair()
    client.sendall(b"GET /items/1 HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n")
    req = next(iter(RequestParser(app.cfg, server, ("127.0.0.1", 4242))))
    resp, environ = create(req, server, ("127.0.0.1", 4242), ("127.0.0.1", 8000), app.cfg)
    resp.start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    resp.write(b"hello")
    client.recv(65536)
    environ["gunicorn_prom_ext.route"] = "/items/<n>"
    stamped = dict(environ, HTTP_X_REQUEST_START=f"t={time.time() - 0.01:.3f}")
    pre, post = hooks.pre_request, hooks.post_request

    def ours(n: int) -> None:
        for _ in range(n):
            pre(worker, req)
            post(worker, req, environ, resp)

    def ours_with_queue_header(n: int) -> None:
        for _ in range(n):
            pre(worker, req)
            post(worker, req, stamped, resp)

    from prometheus_client import CollectorRegistry, Gauge, Histogram

    registry = CollectorRegistry()
    labels = ["http_request_method", "http_route", "http_response_status_code"]
    duration = Histogram("d_seconds", "d", labels, registry=registry)
    sizes = (
        Histogram("req_bytes", "r", labels, registry=registry,
                  buckets=(100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)),
        Histogram("resp_bytes", "r", labels, registry=registry,
                  buckets=(100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)),
    )  # fmt: skip
    active = Gauge("a", "a", ["http_request_method"], registry=registry,
                   multiprocess_mode="livesum")  # fmt: skip
    perf_counter = time.perf_counter

    def prometheus_client(n: int) -> None:
        for _ in range(n):
            start = perf_counter()
            active.labels(req.method).inc()
            active.labels(req.method).dec()
            status = str(resp.status_code)
            route = environ["gunicorn_prom_ext.route"]
            duration.labels(req.method, route, status).observe(perf_counter() - start)
            sizes[0].labels(req.method, route, status).observe(0)
            sizes[1].labels(req.method, route, status).observe(resp.sent)

    def empty(n: int) -> None:  # the loop itself, subtracted from every figure
        for _ in range(n):
            pass

    return {
        "gunicorn-prom-ext (pre_request + post_request)": ours,
        "  same, X-Request-Start present": ours_with_queue_header,
        "prometheus_client multiprocess, same metrics": prometheus_client,
        "(empty loop)": empty,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="bench-request-path-")
    try:
        variants = build(directory)
        for loop in variants.values():  # warm-up: label sets made, caches filled
            loop(2000)
        ns: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, loop in variants.items():
                start = time.perf_counter_ns()
                loop(args.requests)
                ns[name].append((time.perf_counter_ns() - start) / args.requests)
        base = statistics.median(ns["(empty loop)"])
        print(f"python {sys.version.split()[0]}, {args.rounds} rounds of "
              f"{args.requests} requests; ns per request, loop overhead removed")  # fmt: skip
        print(f"{'':48} {'median':>8} {'spread':>15}")
        for name, values in ns.items():
            if name == "(empty loop)":
                continue
            low, high = min(values) - base, max(values) - base
            print(f"{name:48} {statistics.median(values) - base:8.0f} "
                  f"{low:7.0f}..{high:<7.0f}")  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
