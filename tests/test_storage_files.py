"""Our writer against prometheus_client's own reader: same format, exact values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from gunicorn_prom_ext.storage.files import Counters, read_entries, series_key


def _read(path: str) -> dict[str, float]:
    entries = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
    return {key: value for key, value, _, _ in entries}


def test_series_key_is_prometheus_clients_key() -> None:
    labels = {"b": "2", "a": "1"}
    assert series_key("m", "m_total", labels, "help") == mmap_key(
        "m", "m_total", ["b", "a"], ["2", "1"], "help"
    )


def test_prometheus_client_reads_what_we_write(tmp_path: Path) -> None:
    path = str(tmp_path / "counter_gpe-1.db")
    counters = Counters(path, "jobs", "Jobs done.", ["kind"])
    counters.inc("a")
    counters.inc("a")
    counters.inc("b", amount=5)
    values = _read(path)
    assert values == {
        mmap_key("jobs", "jobs_total", ["kind"], ["a"], "Jobs done."): 2.0,
        mmap_key("jobs", "jobs_total", ["kind"], ["b"], "Jobs done."): 5.0,
    }


def test_growing_past_the_first_mapping_keeps_every_entry(tmp_path: Path) -> None:
    path = str(tmp_path / "counter_gpe-2.db")
    counters = Counters(path, "c", "h", ["i"])
    for i in range(3000):  # about 200 KB of keys: several doublings of 64 KiB
        counters.inc(str(i), amount=i)
    assert os.path.getsize(path) >= 3000 * 40
    values = _read(path)
    assert len(values) == 3000
    assert values[mmap_key("c", "c_total", ["i"], ["2999"], "h")] == 2999.0


def test_a_reused_file_continues_from_its_values(tmp_path: Path) -> None:
    path = str(tmp_path / "counter_gpe-3.db")
    Counters(path, "c", "h", ["k"]).inc("x", amount=3)
    again = Counters(path, "c", "h", ["k"])
    again.inc("x")
    values = list(_read(path).values())
    assert values == [4.0]


def test_corrupt_data_is_reported_not_misread() -> None:
    header_claims_more = (1000).to_bytes(4, "little") + b"\0" * 60
    with pytest.raises(ValueError):
        list(read_entries(header_claims_more))
    with pytest.raises(ValueError):
        list(read_entries(b"\0\0"))
