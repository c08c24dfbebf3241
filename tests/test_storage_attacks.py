"""Storage against what someone plants under a metric file's name, on a real gunicorn.

A FIFO, a directory or a symlink where a metric file belongs (in a configured directory
that others can write, or by a confused tool): once, a FIFO blocked the scrape that
opened it and then every fold, which run in gunicorn's main loop, so the first worker
to exit froze the master (no worker replaced: the app down); a directory failed every
scrape; a symlink under a worker thread's file name had the worker write its metrics
into whatever file the link named.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from harness import Gunicorn

pytestmark = pytest.mark.slow
GunicornFactory = Callable[..., Gunicorn]
COUNT = "http_server_request_duration_seconds_count"
PRIVATE_DIR_LINE = re.compile(r"gunicorn-prom-ext: metrics directory (\S+) \(private\)")


def _items(g: Gunicorn) -> float:
    return g.sum_values(COUNT, http_route="/items/<n>")


def test_fifo_or_directory_under_a_metric_file_name_costs_only_itself(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", workers=2).start()
    for i in range(3):
        assert g.request(f"/items/{i}")[0] == 200
    assert g.wait_for(lambda: _items(g) == 3.0)  # recorded (post_request runs after the reply)
    # Under a live worker's prometheus_client file name: read when it exits (in
    # child_exit, in gunicorn's main loop).
    victim = g.worker_pids()[0]
    os.mkfifo(g.multiproc_dir / f"counter_{victim}.db")
    psutil.Process(victim).kill()
    g.wait_for(lambda: len(g.worker_pids()) == 2 and victim not in g.worker_pids())
    assert g.request("/items/3")[0] == 200

    # Under names nobody is using: read by every scrape.
    os.mkfifo(g.multiproc_dir / "counter_4000001.db")
    os.mkdir(g.multiproc_dir / "histogram_4000002.db")
    started = time.monotonic()
    status, _, _ = g.metrics_response(timeout=5)
    assert status == 200 and time.monotonic() - started < 5
    # A SIGKILLed worker may take the one request it was serving; none was in flight.
    assert g.wait_for(lambda: _items(g) == 4.0)
    aside = sorted(p.name for p in g.multiproc_dir.glob("*.corrupt"))
    assert aside == sorted([f"counter_{victim}.db.corrupt", "counter_4000001.db.corrupt",
                            "histogram_4000002.db.corrupt"])  # fmt: skip
    assert g.value("gunicorn_prom_ext_faults_total", kind="storage") == 3.0
    # The master still manages its workers.
    other = g.worker_pids()[0]
    os.kill(other, signal.SIGKILL)
    g.wait_for(lambda: len(g.worker_pids()) == 2 and other not in g.worker_pids())
    assert g.metrics_response(timeout=5)[0] == 200


def test_what_is_planted_under_a_worker_threads_file_name_is_never_written_through(
    gunicorn_factory: GunicornFactory,
) -> None:
    # gthread: a pool thread makes its files (…-1.db) at its first request, after the
    # worker is up, so names can be planted first.
    g = gunicorn_factory("testapp:app", "--threads", "1", "--worker-class", "gthread")
    g.start()
    pid = g.worker_pids()[0]
    outside = g.tmp_dir / "someone-elses-file"
    outside.write_bytes(b"\0" * 65536)
    os.symlink(outside, g.multiproc_dir / f"histogram_gpe-{pid}-1.db")
    os.mkfifo(g.multiproc_dir / f"gauge_livesum_gpe-{pid}-1.db")
    for i in range(3):
        assert g.request(f"/items/{i}")[0] == 200
    assert g.wait_for(lambda: _items(g) == 3.0)
    assert outside.read_bytes() == b"\0" * 65536, "the worker wrote through a symlink"
    assert g.value("http_server_active_requests", http_request_method="GET") == 0.0
    for name in (f"histogram_gpe-{pid}-1.db", f"gauge_livesum_gpe-{pid}-1.db"):
        path = g.multiproc_dir / name
        assert path.is_file() and not path.is_symlink()
        assert (g.multiproc_dir / f"{name}.corrupt").exists()


def test_a_second_server_on_the_same_directory_wipes_none_of_the_first_ones_files(
    gunicorn_factory: GunicornFactory, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    # A stale file of a process that is gone (an earlier run): still wiped at start.
    stale = shared / "histogram_gpe-4000003-0.db"
    stale.write_bytes(b"\x08" + b"\0" * 65535)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    first = gunicorn_factory("testapp:app", env=env).start()
    assert not stale.exists()
    for i in range(5):
        assert first.request(f"/items/{i}")[0] == 200
    assert first.wait_for(lambda: _items(first) == 5.0)

    # An unlucky operator starts a second, unrelated server on the same directory.
    second = gunicorn_factory("testapp:app", env=env).start()
    for i in range(2):
        assert second.request(f"/items/{i}")[0] == 200
    for i in range(3):
        assert first.request(f"/items/{i}")[0] == 200
    # Nothing is lost: both read the one directory, so both show the sum.
    assert first.wait_for(lambda: _items(first) == 10.0)
    assert _items(second) == 10.0
    log = second.log_text()
    assert log.count("another server uses the directory") == 1
    assert str(first.master_pid) in log
    assert "another server" not in first.log_text()


def test_a_clock_step_does_not_make_a_live_masters_private_directory_an_orphan(
    gunicorn_factory: GunicornFactory,
) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": ""}
    first = gunicorn_factory("testapp:app", env=env).start()
    match = PRIVATE_DIR_LINE.search(first.log_text())
    assert match is not None
    private = Path(match[1])
    # The wall clock is set 5 s ahead after the master started (an NTP step, a VM
    # resumed): its start time as read now is 5 s later than the one it wrote down.
    owner = private / ".owner"
    fields = owner.read_text().split()
    fields[1] = str(float(fields[1]) - 5.0)
    owner.write_text(" ".join(fields) + "\n")
    assert first.request("/items/1")[0] == 200
    # Another server starts on this host and sweeps orphans.
    second = gunicorn_factory("testapp:app", env=env).start()
    assert second.request("/")[0] == 200
    assert private.is_dir(), "a live master's directory was swept"
    assert first.wait_for(lambda: _items(first) == 1.0)
    assert first.value("gunicorn_prom_ext_faults_total", kind="storage_lost") == 0.0


def test_directory_replaced_by_a_file_costs_metrics_not_scrapes(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app").start()
    assert g.request("/items/1")[0] == 200
    assert g.wait_for(lambda: _items(g) == 1.0)
    shutil.rmtree(g.multiproc_dir)
    g.multiproc_dir.write_text("someone's file, where the directory was")
    # Scrapes answer with what the master knows; nothing is recorded until it is undone.
    for _ in range(3):
        status, _, _ = g.metrics_response()
        assert status == 200
    assert g.value("gunicorn_workers") == 1.0
    # A worker dies: the master folds nothing (there is nowhere to) and replaces it.
    (victim,) = g.worker_pids()
    os.kill(victim, signal.SIGKILL)
    g.wait_for(lambda: len(g.worker_pids()) == 1 and victim not in g.worker_pids())
    assert g.request("/items/2")[0] == 200
    assert g.log_text().count("cannot be made again") == 1
    # The operator removes the file: the directory is made again, counting resumes.
    g.multiproc_dir.unlink()
    assert g.metrics_response()[0] == 200
    assert g.multiproc_dir.is_dir()
    assert g.request("/items/3")[0] == 200
    # The live worker's request of before comes back from its memory; the dead one's is lost.
    assert g.wait_for(lambda: _items(g) == 2.0)
    # The faults, kept in memory meanwhile (their file was in the directory too).
    assert g.value("gunicorn_prom_ext_faults_total", kind="storage_lost") >= 2.0
    assert g.value("gunicorn_prom_ext_faults_total", kind="scrape") == 0.0
    assert g.value("gunicorn_prom_ext_faults_total", kind="hook") == 0.0


def test_a_corrupted_archive_is_written_anew_from_the_masters_memory(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app").start()
    for i in range(4):
        assert g.request(f"/items/{i}")[0] == 200
    assert g.wait_for(lambda: _items(g) == 4.0)
    (victim,) = g.worker_pids()
    os.kill(victim, signal.SIGKILL)  # its counts go into the master's archive
    g.wait_for(lambda: len(g.worker_pids()) == 1 and victim not in g.worker_pids())
    archive = g.multiproc_dir / f"histogram_archive-{g.master_pid}.db"
    g.wait_for(archive.exists)
    with open(archive, "r+b") as f:  # someone writes over its header
        f.write(b"\xff\xff\xff\x7f")
    # The scrape that sets it aside already has the counts again: never a reset.
    assert _items(g) == 4.0
    assert (g.multiproc_dir / f"{archive.name}.corrupt").exists()
    assert archive.exists()
    # And folds go on into the new archive, not into the one set aside.
    assert g.request("/items/9")[0] == 200
    assert g.wait_for(lambda: _items(g) == 5.0)
    (victim,) = g.worker_pids()
    os.kill(victim, signal.SIGKILL)
    g.wait_for(lambda: len(g.worker_pids()) == 1 and victim not in g.worker_pids())
    assert g.wait_for(lambda: _items(g) == 5.0)
    assert g.value("gunicorn_prom_ext_faults_total", kind="storage") == 1.0


def test_files_of_processes_it_did_not_fork_are_folded_though_no_worker_exits(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app").start()
    # The app's own short-lived processes (a job runner, say) using prometheus_client in
    # the same directory: each leaves its file when it ends. 2,000 such, no worker exit.
    code = "from prometheus_client import Counter\nCounter('job_runs', 'Runs.').inc()\n"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(g.multiproc_dir)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    (written,) = [p for p in g.multiproc_dir.glob("counter_*.db") if p.stem[8:].isdigit()]
    data = written.read_bytes()
    written.unlink()
    for pid in range(5_000_000, 5_002_000):  # above the highest pid Linux allows (2**22)
        (g.multiproc_dir / f"counter_{pid}.db").write_bytes(data)
    assert g.value("job_runs_total") == 2000.0
    # Folded within the sweep interval (30 s) by a scrape; counted the same, once.
    deadline = time.monotonic() + 45
    while list(g.multiproc_dir.glob("counter_50*.db")) and time.monotonic() < deadline:
        assert g.value("job_runs_total") == 2000.0
        time.sleep(1)
    assert not list(g.multiproc_dir.glob("counter_50*.db"))
    assert g.value("job_runs_total") == 2000.0
