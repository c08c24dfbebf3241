"""Faults this package contained: counted by kind, each kind and place logged once.

A fault never reaches gunicorn (a master-side hook that raises stops the whole server);
it is counted in ``gunicorn_prom_ext_faults_total{kind}`` and logged the first time it
happens at a given place, so a fault that repeats on every request cannot flood the log.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn_prom_ext.log import Log
from gunicorn_prom_ext.natives import natives
from gunicorn_prom_ext.storage.files import Counters, metric_file_path

FAULTS_METRIC = "gunicorn_prom_ext_faults"
# Every kind a fault can have (the README's metrics table explains each). The master
# writes each at 0 at start: a counter that appears only with its first fault is
# invisible to increase() and rate(), so the first fault would never show.
FAULT_KINDS = (
    "hook", "request", "scrape",
    "endpoint_bind", "endpoint_serve", "endpoint_connections",
    "storage", "storage_full", "storage_lost",
    "redis_push", "redis_stale",
)  # fmt: skip
FAULTS_HELP = "Faults gunicorn-prom-ext contained (logged once each), by kind."
# Distinct (kind, place) pairs remembered for "log once"; bounded so that places carrying
# varying details cannot grow memory without limit.
_MAX_REMEMBERED = 256


def fault_counters(directory: str, namespace: str) -> Counters:
    """This process's fault counter file in the multiprocess directory."""
    name = f"{namespace}_{FAULTS_METRIC}" if namespace else FAULTS_METRIC
    path = metric_file_path(directory, "counter", str(os.getpid()))
    return Counters(path, name, FAULTS_HELP, ["kind"])


class Faults:
    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters
        self._logged: set[tuple[str, str]] = set()
        # Reentrant: a signal handler may count a fault in the holder. Real, not green:
        # the master's endpoint threads count faults too (natives.py).
        self._lock = natives().threading.RLock()

    def publish_kinds(self) -> None:
        """Every kind at 0, so the first fault of a kind is an increase Prometheus sees."""
        for kind in FAULT_KINDS:
            self.count(kind, 0.0)

    def count(self, kind: str, amount: float = 1.0) -> None:
        try:
            if self.counters is not None:
                self.counters.inc(kind, amount=amount)
        except Exception:
            pass  # counting must never become a second fault (e.g. a full disk)

    def first_time(self, kind: str, where: str) -> bool:
        """True once per (kind, where): the caller logs then."""
        with self._lock:
            if (kind, where) in self._logged:
                return False
            if len(self._logged) >= _MAX_REMEMBERED:
                self._logged.clear()
            self._logged.add((kind, where))
            return True

    def hook_failed(self, kind: str, log: Log, where: str) -> None:
        """Contain an exception from one of our hooks (call from an except block)."""
        self.count(kind)
        if self.first_time(kind, where):
            log.exception(
                "gunicorn-prom-ext: %s failed (further failures counted in %s_total)",
                where,
                FAULTS_METRIC,
            )

    def error(self, kind: str, log: Log, where: str, message: str, *args: Any) -> None:
        """Count a fault and log ``message`` the first time it happens at ``where``."""
        self.count(kind)
        if self.first_time(kind, where):
            log.error("gunicorn-prom-ext: " + message, *args)
