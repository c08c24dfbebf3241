"""Tables in README.md are generated from the code; these tests keep them in step."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Gunicorn
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_prom_ext.settings import settings_reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def between_markers(text: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    assert start in text and end in text, f"README.md lacks the {name} markers"
    return text.split(start, 1)[1].split(end, 1)[0]


def test_configuration_table_matches_code() -> None:
    # On failure, paste settings_reference_markdown() between the markers.
    table = between_markers(README.read_text(encoding="utf-8"), "settings-table")
    assert table == settings_reference_markdown()


def _readme_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    rows = between_markers(README.read_text(encoding="utf-8"), "metrics-table").splitlines()
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for row in rows[2:]:
        name, kind, labels, _ = (cell.strip() for cell in row.strip("|").split("|"))
        label_set = frozenset(x.strip(" `") for x in labels.split(",") if x.strip())
        out[name.strip("`")] = (kind, label_set)
    return out


@pytest.mark.slow
def test_metrics_table_matches_what_a_real_server_exposes(
    gunicorn_factory: Callable[..., Gunicorn],
) -> None:
    g = gunicorn_factory("testapp:app")
    # Hold the metrics port for a moment so the fault counter exists too.
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", g.metrics_port))
        blocker.listen()
        g.start(wait_metrics=False)
    g.wait_for(lambda: g.metrics_response()[0] == 200, timeout=10)
    g.request("/items/1", method="POST", body=b"x")
    # Queue time, and a proxy clock running ahead: their families appear with these.
    g.request("/", headers={"X-Request-Start": f"t={time.time() - 0.1:.3f}"})
    g.request("/", headers={"X-Request-Start": f"t={time.time() + 60:.3f}"})
    exposed: dict[str, tuple[str, frozenset[str]]] = {}
    for family in text_string_to_metric_families(g.metrics_text()):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        exposed[name] = (family.type, frozenset(labels))
    assert exposed == _readme_metrics()
