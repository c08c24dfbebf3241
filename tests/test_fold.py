"""Folding dead processes' files changes nothing a scrape shows, only what it costs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gunicorn_prom_ext.storage.fold import Archive, DirectoryLock, files_of, fold_leftovers
from gunicorn_prom_ext.storage.names import parse_file_name

# Each run is one short-lived process writing every kind of multiprocess value.
WRITER = """
import sys, time
from prometheus_client import Counter, Gauge, Histogram, Summary
i = int(sys.argv[1])
Counter("jobs", "Jobs.", ["kind"]).labels("a").inc(i + 1)
Histogram("latency_seconds", "Latency.", buckets=(0.1, 1)).observe(0.05 * (i + 1))
Summary("sizes", "Sizes.").observe(10 * i)
for mode in ("sum", "max", "min", "mostrecent", "all", "livesum"):
    Gauge(f"g_{mode}", mode, multiprocess_mode=mode).set(i + 1)
    time.sleep(0.002)  # distinct timestamps for mostrecent
"""


def _write_processes(directory: Path, count: int) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for i in range(count):
        subprocess.run([sys.executable, "-c", WRITER, str(i)], env=env, check=True)


def _scrape(directory: Path) -> list[str]:
    """The exposition's lines, sorted: family order follows file order, which folding changes."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return sorted(generate_latest(registry).decode().splitlines())


def test_folding_keeps_the_exposition_and_drops_dead_live_gauges(tmp_path: Path) -> None:
    _write_processes(tmp_path, 4)
    for live in tmp_path.glob("gauge_livesum_*.db"):
        live.unlink()  # what mark_process_dead does for dead processes
    before = _scrape(tmp_path)
    files_before = sorted(p.name for p in tmp_path.glob("*.db"))
    assert len(files_before) == 4 * 8  # counter, histogram, summary, 5 kept gauge modes

    archive = Archive(str(tmp_path), os.getpid())
    lock = DirectoryLock(str(tmp_path))
    started = time.perf_counter()
    assert fold_leftovers(str(tmp_path), archive, lock) == 4 * 7  # "all" gauges stay
    assert time.perf_counter() - started < 5  # generous: it is a sanity bound, not a benchmark

    assert _scrape(tmp_path) == before
    remaining = sorted(p.name for p in tmp_path.glob("*.db"))
    pid = os.getpid()
    archives = {
        f"{kind}_archive-{pid}.db"
        for kind in ("counter", "histogram", "summary", "gauge_sum", "gauge_max", "gauge_min",
                     "gauge_mostrecent")
    }
    assert set(remaining) - archives == {n for n in files_before if n.startswith("gauge_all_")}

    # Folding more history into the same archive keeps adding up.
    _write_processes(tmp_path, 2)
    for live in tmp_path.glob("gauge_livesum_*.db"):
        live.unlink()
    before = _scrape(tmp_path)
    assert fold_leftovers(str(tmp_path), archive, lock) == 2 * 7
    assert _scrape(tmp_path) == before
    assert 'jobs_total{kind="a"} 13.0' in before  # 1 + 2 + 3 + 4, then 1 + 2


def test_file_names() -> None:
    assert parse_file_name("/d/counter_123.db") == parse_file_name("/d/counter_123.db")
    name = parse_file_name("/d/gauge_livesum_gpe-77.db")
    assert name is not None and (name.type, name.mode, name.pid) == ("gauge", "livesum", 77)
    archive = parse_file_name("/d/histogram_archive-5.db")
    assert archive is not None and archive.is_archive and archive.pid == 5
    thread = parse_file_name("/d/histogram_gpe-9-3.db")
    assert thread is not None and (thread.type, thread.pid, thread.is_archive) == (
        "histogram", 9, False
    )
    # Only prometheus_client's and this package's names: anything else is someone else's.
    for foreign in ("counter_1.db.corrupt", "app.db", "counter_x.db", "gauge_7.db",
                    "histogram_sum_7.db", "gauge_bogus_7.db", "counter_gpe-.db",
                    "counter_-1.db", "counter_\u0661.db", "Counter_1.db", "counter_1.DB"):
        assert parse_file_name(f"/d/{foreign}") is None, foreign


def test_files_of_finds_every_thread_of_a_worker(tmp_path: Path) -> None:
    pid = 5_000_000
    names = [
        f"histogram_gpe-{pid}-0.db",
        f"gauge_livesum_gpe-{pid}-0.db",
        f"histogram_gpe-{pid}-1.db",
        f"gauge_livesum_gpe-{pid}-1.db",
        f"counter_gpe-{pid}.db",
        f"counter_{pid}.db",
        f"gauge_all_{pid}.db",
    ]
    for name in [*names, f"counter_{pid}1.db", f"histogram_gpe-{pid}1-0.db"]:
        (tmp_path / name).write_bytes(b"")
    found = sorted(os.path.basename(n.path) for n in files_of(str(tmp_path), pid))
    assert found == sorted(names)
