"""A bad file in the multiprocess directory costs that file, never the endpoint."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from harness import Gunicorn

pytestmark = pytest.mark.slow


def test_empty_and_garbage_files_are_set_aside_and_counted(
    gunicorn_factory: Callable[..., Gunicorn],
) -> None:
    g = gunicorn_factory("testapp:app").start()
    assert g.request("/items/1")[0] == 200
    empty = g.multiproc_dir / "counter_4242.db"
    empty.write_bytes(b"")
    os.utime(empty, (1, 1))  # long past the age of a file being created
    garbage = g.multiproc_dir / "histogram_4343.db"
    garbage.write_bytes(b"\xff" * 100)
    newborn = g.multiproc_dir / "counter_4444.db"
    newborn.write_bytes(b"")

    count = g.sum_values("http_server_request_duration_seconds_count")
    assert count == 1.0
    assert g.value("gunicorn_prom_ext_faults_total", kind="storage") == 2.0
    assert not empty.exists() and (g.multiproc_dir / "counter_4242.db.corrupt").exists()
    assert not garbage.exists() and (g.multiproc_dir / "histogram_4343.db.corrupt").exists()
    assert newborn.exists()  # young and empty: a file being created, left alone
    assert g.log_text().count("skipped unreadable metrics file") == 2
