"""A full metrics filesystem costs metrics, never requests or workers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return filler


def _count(g: Gunicorn, status: int) -> float:
    return g.sum_values(
        "http_server_request_duration_seconds_count", http_response_status_code=str(status)
    )


def test_full_disk_drops_metrics_not_requests_and_recovers(
    gunicorn_factory: Callable[..., Gunicorn], small_tmpfs: Path
) -> None:
    multiproc = small_tmpfs / "multiproc"
    multiproc.mkdir()
    g = gunicorn_factory("testapp:app", env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}).start()
    (worker,) = g.worker_pids()
    assert g.request("/status/200")[0] == 200
    filler = _fill(small_tmpfs)

    # Every new status is a new label set that needs file space the disk no longer has.
    codes = list(range(201, 227))
    for code in codes:
        assert g.request(f"/status/{code}")[0] == code
    assert g.request("/status/200")[0] == 200  # a known label set still records
    assert g.wait_for(lambda: _count(g, 200) == 2.0, timeout=5)
    lost = g.value("gunicorn_prom_ext_faults_total", kind="storage_full")
    recorded = sum(_count(g, code) for code in codes)
    assert lost >= 1 and recorded + lost == len(codes)
    assert g.worker_pids() == [worker], "the worker must survive a full disk"
    assert g.log_text().count("the metrics directory is full") == 1

    filler.unlink()
    for code in codes:
        assert g.request(f"/status/{code}")[0] == code
    assert g.wait_for(lambda: sum(_count(g, c) for c in codes) == recorded + len(codes))
    assert g.worker_pids() == [worker]
