"""The metric names this package exposes, as the kit's queries use them (no namespace).

The namespace setting prefixes each of them; everything else in a query (functions, label
names, label values, recording rules of other projects) keeps its name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram"]

# Family name -> type. Counters are listed by family name; their sample name adds _total.
METRICS: Mapping[str, MetricType] = {
    "http_server_request_duration_seconds": "histogram",
    "http_server_request_queue_duration_seconds": "histogram",
    "http_server_active_requests": "gauge",
    "http_server_request_body_size_bytes": "histogram",
    "http_server_response_body_size_bytes": "histogram",
    "gunicorn_workers": "gauge",
    "gunicorn_workers_desired": "gauge",
    "gunicorn_worker_spawns": "counter",
    "gunicorn_worker_exits": "counter",
    "gunicorn_reloads": "counter",
    "gunicorn_master_start_time_seconds": "gauge",
    "gunicorn_info": "gauge",
    "gunicorn_listen_backlog": "gauge",
    "gunicorn_worker_capacity": "gauge",
    "gunicorn_worker_resident_memory_bytes": "gauge",
    "gunicorn_worker_cpu_seconds": "counter",
    "gunicorn_worker_open_fds": "gauge",
    "gunicorn_prom_ext_faults": "counter",
}

_SUFFIXES: Mapping[MetricType, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_sum", "_count", "_created"),
}


def sample_names(family: str) -> tuple[str, ...]:
    """Every name a query may use for one family: ``x_bucket``, ``x_total``, …"""
    return tuple(family + suffix for suffix in _SUFFIXES[METRICS[family]])


def exposed_names() -> frozenset[str]:
    return frozenset(name for family in METRICS for name in sample_names(family))


def namespaced(name: str, namespace: str) -> str:
    return f"{namespace}_{name}" if namespace else name


def recording_rule_name(record: str, namespace: str) -> str:
    """``level:metric:operations`` with the namespace on its metric part.

    A name without that shape gets the plain prefix, as an exposed metric would.
    """
    parts = record.split(":")
    if len(parts) == 3 and all(parts):
        level, metric, operations = parts
        return f"{level}:{namespaced(metric, namespace)}:{operations}"
    return namespaced(record, namespace)


def name_map(namespace: str, recorded: Iterable[str] = ()) -> dict[str, str]:
    """Old name -> new name for every exposed name and every given recording rule name."""
    mapping = {name: namespaced(name, namespace) for name in exposed_names()}
    mapping.update({name: recording_rule_name(name, namespace) for name in recorded})
    return mapping
