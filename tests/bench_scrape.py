"""What a scrape costs as history piles up: prometheus_client alone vs with folding.

A script, not a test:

    .venv/bin/python tests/bench_scrape.py [--history 0 500 2000] [--repeat 7]

For each history size it builds a multiprocess directory with 4 live workers (real
sleeping processes) and N dead ones (pids that do not exist), each with the files a
gunicorn-prom-ext worker writes: one label set of the three request histograms, the
active-requests gauge and a counter, about 50 series. It then times a scrape with
prometheus_client's MultiProcessCollector over every file, folds the dead workers into
the archive (timing each fold), and times a scrape through the project's reader.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gunicorn_prom_ext.labels import MetricNames
from gunicorn_prom_ext.requests import RequestRecorder
from gunicorn_prom_ext.settings import Settings
from gunicorn_prom_ext.storage.files import Counters, MetricFile, metric_file_path
from gunicorn_prom_ext.storage.fold import Archive, DirectoryLock, files_of, fold_process
from gunicorn_prom_ext.storage.reader import FilesCollector

FAKE_PID_BASE = 5_000_000  # above Linux's pid_max: never alive


def write_worker(directory: str, pid: int) -> None:
    settings = Settings()
    recorder = RequestRecorder(
        MetricFile(metric_file_path(directory, "histogram", f"{pid}-0")),
        MetricFile(metric_file_path(directory, "gauge_livesum", f"{pid}-0")),
        MetricNames(""),
        settings.duration_buckets,
        settings.body_size_buckets,
        logging.getLogger("bench"),
    )
    resp = SimpleNamespace(headers_sent=True, status_code=200, sent=5, response_length=5)
    environ = {"gunicorn_prom_ext.route": "/items/<int:pk>", "CONTENT_LENGTH": "12"}
    for _ in range(20):
        recorder.hook_started("GET")
        recorder.hook_finished(environ, resp)
    recorder.close()
    path = metric_file_path(directory, "counter", str(pid))
    Counters(path, "gunicorn_prom_ext_faults", "Faults.", ["kind"]).inc("request")


def median_ms(scrape: Callable[[], bytes], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        scrape()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def directory_size(directory: str) -> tuple[int, int]:
    names = [os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".db")]
    return len(names), sum(os.path.getsize(n) for n in names)


def run(history: int, repeat: int) -> None:
    directory = tempfile.mkdtemp(prefix="bench-scrape-")
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(4)]
    try:
        for proc in sleepers:
            write_worker(directory, proc.pid)
        for i in range(history):
            write_worker(directory, FAKE_PID_BASE + i)
        files, size = directory_size(directory)

        plain = CollectorRegistry()
        MultiProcessCollector(plain, path=directory)  # type: ignore[no-untyped-call]
        alone_ms = median_ms(lambda: generate_latest(plain), repeat)
        expected = sorted(generate_latest(plain).decode().splitlines())

        archive, lock = Archive(directory, os.getpid()), DirectoryLock(directory)
        started = time.perf_counter()
        for i in range(history):
            fold_process(directory, FAKE_PID_BASE + i, archive, lock)
        fold_ms = (time.perf_counter() - started) * 1000 / history if history else 0.0
        assert not files_of(directory, FAKE_PID_BASE), "fold left files behind"

        ours = CollectorRegistry()
        ours.register(FilesCollector(directory, lambda path, problem: None))
        ours_ms = median_ms(lambda: generate_latest(ours), repeat)
        # Folding must not change what is exposed (dead workers' live gauges aside: 0 here).
        got = sorted(generate_latest(ours).decode().splitlines())
        assert got == expected, "the folded exposition differs"
        files_after, size_after = directory_size(directory)
        print(
            f"{history:>7} {files:>6} {size / 1e6:>8.1f} {alone_ms:>12.2f}"
            f" {ours_ms:>11.2f} {fold_ms:>9.2f} {files_after:>6} {size_after / 1e6:>8.2f}"
        )
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[0, 500, 2000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(
        "dead wk  files  size MB  pc-alone ms  folded ms  fold ms/wk  files  size MB"
        "\n(before fold)-----------------------  (after fold)-----------------------"
    )
    for history in args.history:
        run(history, args.repeat)


if __name__ == "__main__":
    main()
