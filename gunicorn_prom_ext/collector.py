"""The master's scrape-time view: server metrics from ServerState, the arbiter and psutil.

Imported only once the multiprocess directory is set (it imports prometheus_client).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import gunicorn
import psutil
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gunicorn_prom_ext.natives import natives
from gunicorn_prom_ext.server import EXIT_REASONS, ServerState
from gunicorn_prom_ext.worker_classes import class_names

_TCP_INFO = struct.Struct("B" * 8 + "I" * 24)


def accept_queue_length(listener: Any) -> int | None:
    """Connections waiting in a listener's accept queue, or None where unknown.

    gunicorn ≥ 24.1 has ``get_backlog()``; older ones get the same TCP_INFO read.
    """
    get_backlog = getattr(listener, "get_backlog", None)
    if get_backlog is not None:
        value = get_backlog()
        return value if isinstance(value, int) and value >= 0 else None
    sock = getattr(listener, "sock", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
        return int(_TCP_INFO.unpack(info)[12])  # tcpi_unacked: the accept queue when listening
    except (AttributeError, OSError, struct.error):
        return None


def worker_capacity(arbiter: Any) -> int:
    """Requests one worker can serve at once, for its worker class (a project's subclass
    of gunicorn's sync or gthread worker included: judged by the classes it derives from)."""
    cfg = arbiter.cfg
    names = class_names(arbiter.worker_class)
    if "gunicorn.workers.sync.SyncWorker" in names:
        return 1
    if "gunicorn.workers.gthread.ThreadWorker" in names:
        return int(cfg.threads)
    if "gunicorn.workers.gtornado.TornadoWorker" in names:
        # tornado runs a WSGI app (the only kind recorded there) in its IOLoop, one
        # request at a time.
        return 1
    return int(cfg.worker_connections)


class ServerCollector(Collector):
    def __init__(self, arbiter: Any, state: ServerState, namespace: str) -> None:
        self._arbiter = arbiter
        self._state = state
        self._prefix = f"{namespace}_" if namespace else ""
        # slot -> (age of its worker, that worker's last CPU sample, CPU of its predecessors)
        self._cpu: dict[int, tuple[int, float, float]] = {}
        # Scrapes run in parallel (real) threads: a real lock (natives.py).
        self._cpu_lock = natives().threading.Lock()

    def collect(self) -> Iterator[Metric]:
        p = self._prefix
        arbiter = self._arbiter
        # dict() copies in one step under the GIL; the main loop may change WORKERS.
        workers = dict(arbiter.WORKERS)
        snap = self._state.snapshot([w.age for w in workers.values()])

        yield GaugeMetricFamily(p + "gunicorn_workers", "Worker processes alive.", len(workers))
        yield GaugeMetricFamily(
            p + "gunicorn_workers_desired", "Worker processes the master aims for.", snap.desired
        )
        yield CounterMetricFamily(
            p + "gunicorn_worker_spawns", "Worker processes started.", snap.spawns
        )
        exits = CounterMetricFamily(
            p + "gunicorn_worker_exits",
            "Worker processes that ended, by reason.",
            labels=["reason"],
        )
        for reason in EXIT_REASONS:
            exits.add_metric([reason], snap.exits[reason])
        yield exits
        yield CounterMetricFamily(
            p + "gunicorn_reloads", "Configuration reloads (HUP).", snap.reloads
        )
        yield GaugeMetricFamily(
            p + "gunicorn_master_start_time_seconds",
            "Start time of the gunicorn master since the Unix epoch.",
            snap.start_time,
        )
        info = GaugeMetricFamily(
            p + "gunicorn_info",
            "Gunicorn version and worker class.",
            labels=["version", "worker_class"],
        )
        info.add_metric([gunicorn.__version__, str(arbiter.cfg.worker_class_str)], 1)
        yield info
        backlog = GaugeMetricFamily(
            p + "gunicorn_listen_backlog",
            "Connections waiting in the listener's accept queue.",
            labels=["listener"],
        )
        for listener in list(arbiter.LISTENERS):
            length = accept_queue_length(listener)
            if length is not None:
                backlog.add_metric([str(listener)], length)
        yield backlog
        yield GaugeMetricFamily(
            p + "gunicorn_worker_capacity",
            "Requests the live workers can serve at once.",
            len(workers) * worker_capacity(arbiter),
        )
        yield from self._per_worker(workers, snap.slots)

    def _per_worker(self, workers: dict[int, Any], slots: dict[int, int]) -> Iterator[Metric]:
        p = self._prefix
        rss = GaugeMetricFamily(
            p + "gunicorn_worker_resident_memory_bytes",
            "Resident memory of each worker.",
            labels=["worker"],
        )
        cpu = CounterMetricFamily(
            p + "gunicorn_worker_cpu_seconds",
            "CPU time of the workers in each slot (user and system), replacements included.",
            labels=["worker"],
        )
        fds = GaugeMetricFamily(
            p + "gunicorn_worker_open_fds",
            "Open file descriptors of each worker.",
            labels=["worker"],
        )
        for pid, worker in workers.items():
            slot = slots.get(worker.age)
            if slot is None:
                continue  # a retiring worker whose slot its replacement already shows
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    memory = proc.memory_info().rss
                    times = proc.cpu_times()
                    open_fds = proc.num_fds()
            except (psutil.Error, OSError):
                continue  # exited between the snapshot and now
            label = [str(slot)]
            rss.add_metric(label, memory)
            cpu.add_metric(label, self._slot_cpu(slot, worker.age, times.user + times.system))
            fds.add_metric(label, open_fds)
        yield rss
        yield cpu
        yield fds

    def _slot_cpu(self, slot: int, age: int, seconds: float) -> float:
        """A counter per slot that never goes back when the slot's worker is replaced.

        Scrapes run in parallel: a sample taken before another scrape's may arrive after
        it, and a scrape that began before a replacement may report the old worker after
        one that saw the new. Neither may move the counter back (nor count twice). The
        predecessor's CPU after its last sample is not seen: a scrape cannot read a dead
        process.
        """
        with self._cpu_lock:
            known_age, last, base = self._cpu.get(slot, (age, 0.0, 0.0))
            if age < known_age:  # an older worker of this slot, seen late
                return base + last
            if age != known_age:
                base, last = base + last, 0.0
            last = max(last, seconds)
            self._cpu[slot] = (age, last, base)
            return base + last
