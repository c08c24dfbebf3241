"""Queue time from the front proxy's stamp to pre_request: every stamp format proxies use."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness import Gunicorn

from gunicorn_prom_ext.queue_time import parse_stamp

GunicornFactory = Callable[..., Gunicorn]
QUEUE = "http_server_request_queue_duration_seconds"
SKEW = "http_server_request_queue_clock_skew_total"


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("t=1764260000.123", 1764260000.123),  # nginx ${msec}
        ("1764260000.123", 1764260000.123),
        ("t=1764260000123", 1764260000.123),  # milliseconds (Heroku)
        ("1764260000123", 1764260000.123),
        ("t=1764260000123456", 1764260000.123456),  # microseconds (Apache %t)
        ("1764260000123456789", 1764260000.123456789),  # nanoseconds
        (b"t=1764260000.5", 1764260000.5),  # ASGI headers are bytes
    ],
)
def test_stamps_in_every_unit(stamp: str | bytes, seconds: float) -> None:
    assert parse_stamp(stamp) == pytest.approx(seconds, abs=1e-6)


MALFORMED: list[object] = [
    "", "t=", "abc", "t=abc", "1_764_260_000", "-1764260000", "inf", "nan", "1e9",
    " 1764260000", "1764260000.1.2", "\u0661\u0667\u0666\u0664\u0662\u0666\u0660" * 2,
    "123", "t=" + "9" * 40, None, 1764260000, ["1764260000"], ".", "t=.",
    "+1764260000", "1764260000\n",
]  # fmt: skip


@pytest.mark.parametrize("stamp", MALFORMED)
def test_malformed_stamps_record_nothing(stamp: object) -> None:
    assert parse_stamp(stamp) is None


def _queue(g: Gunicorn) -> dict[str, float]:
    out = {}
    for (name, labels), value in g.metrics().items():
        if name.startswith(QUEUE):
            le = dict(labels).get("le")
            out[name.removeprefix(QUEUE) + (f"[{le}]" if le else "")] = value
            assert set(dict(labels)) <= {"le"}, "queue time carries no other label"
    return out


@pytest.mark.slow
def test_queue_time_from_each_proxy_format(gunicorn_factory: GunicornFactory) -> None:
    g = gunicorn_factory("testapp:app", "--threads", "2").start()
    now = time.time()
    stamps = [
        f"t={now - 0.2:.3f}",  # nginx, 0.2 s ago
        str(int((now - 0.4) * 1000)),  # milliseconds, 0.4 s ago
        f"t={int((now - 0.6) * 1e6)}",  # microseconds, 0.6 s ago
        f"t={now + 60:.3f}",  # a proxy whose clock runs a minute ahead: 0, and skew
        "t=garbage",  # malformed: nothing
    ]
    for stamp in stamps:
        assert g.request("/", headers={"X-Request-Start": stamp})[0] == 200
    assert g.request("/")[0] == 200  # no header: nothing
    def counted() -> dict[str, float] | None:
        q = _queue(g)
        return q if q.get("_count") == 4.0 else None

    q = g.wait_for(counted)
    assert q["_bucket[0.005]"] == 1.0  # the future stamp, counted as 0
    assert q["_bucket[0.1]"] == 1.0
    assert q["_bucket[0.25]"] == 2.0
    assert q["_bucket[0.5]"] == 3.0
    assert q["_bucket[0.75]"] == 4.0
    assert q["_sum"] == pytest.approx(1.2, abs=0.3)
    assert g.value(SKEW) == 1.0
    assert g.sum_values("http_server_request_duration_seconds_count") == 6.0


@pytest.mark.slow
def test_header_name_is_a_setting_and_off_disables_it(
    gunicorn_factory: GunicornFactory,
) -> None:
    g = gunicorn_factory("testapp:app", env={"PROMETHEUS_QUEUE_TIME_HEADER": "X-Queue-Start"})
    g.start()
    stamp = f"t={time.time() - 0.05:.3f}"
    assert g.request("/", headers={"X-Request-Start": stamp})[0] == 200
    assert g.request("/", headers={"X-Queue-Start": stamp})[0] == 200
    assert g.wait_for(lambda: _queue(g).get("_count") == 1.0)
    assert _queue(g)["_bucket[0.005]"] == 0.0  # at 0 from the start, one observation since
    off = gunicorn_factory("testapp:app", env={"PROMETHEUS_QUEUE_TIME_HEADER": "off"}).start()
    assert off.request("/", headers={"X-Request-Start": stamp})[0] == 200
    assert off.wait_for(lambda: off.sum_values("http_server_request_duration_seconds_count"))
    assert _queue(off) == {}
