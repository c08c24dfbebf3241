"""Queue time: how long a request waited between the front proxy and the worker.

Proxies stamp the moment they passed a request on: nginx
``proxy_set_header X-Request-Start "t=${msec}";`` (seconds with a fraction), Heroku and
others in milliseconds, Apache's ``%t`` in microseconds, with or without the ``t=``
prefix. The unit is told apart by magnitude: today is about 1.7e9 seconds, 1.7e12
milliseconds, 1.7e15 microseconds or 1.7e18 nanoseconds since the epoch, and each range
stays apart from the next for thousands of years.

The header comes from the client unless the proxy overwrites it: a forged stamp can put
any non-negative value into the one unlabelled histogram, and never makes a new series.
"""

from __future__ import annotations

import contextlib

from gunicorn_prom_ext.storage.files import MetricFile, series_key

# Stamps before 2000-01-01 are not clocks anyone runs: treated as malformed.
_EARLIEST = 946_684_800.0
_MAX_LENGTH = 32


def environ_key(header: str) -> str:
    """The WSGI environ key gunicorn stores a request header under."""
    return "HTTP_" + header.upper().replace("-", "_")


def parse_stamp(value: object) -> float | None:
    """The stamp as seconds since the epoch; None if it is not a plain number."""
    if type(value) is not str:
        if type(value) is not bytes:
            return None
        value = value.decode("latin-1")
    value = value.removeprefix("t=")
    # ASCII digits and dots only: float() alone would also take "1_0", "inf", "-1", "1e9",
    # " 1" and other scripts' digits. (One C call; this runs for every stamped request.)
    if len(value) > _MAX_LENGTH or value.strip("0123456789."):
        return None
    try:
        number = float(value)
    except ValueError:  # "", ".", "1.2.3"
        return None
    if number >= 1e11:
        number /= 1e9 if number >= 1e17 else 1e6 if number >= 1e14 else 1e3
    return number if number >= _EARLIEST else None


class QueueClock:
    """One thread's reading of the stamp, and its count of stamps from the future.

    The skew counter lives in a counter file of the thread's own, made on the first
    skewed stamp (most deployments never see one).
    """

    def __init__(self, header: str, counter_path: str, metric_name: str, help_text: str) -> None:
        self.header = header
        self.environ_key = environ_key(header)
        self.asgi_header = header.lower().encode("latin-1")
        self._path = counter_path
        self._key = series_key(metric_name, metric_name + "_total", {}, help_text)
        self._file: MetricFile | None = None
        self._pos = 0
        self._fresh = False
        self.skewed = 0.0

    def count_skew(self) -> None:
        self.skewed += 1.0
        self._write_skew()

    def relocate(self) -> None:
        """The counter file went away: the next write makes a new one."""
        if self._file is not None and not self._file.in_place():
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
            self._fresh = True
            self._write_skew()

    def _write_skew(self) -> None:
        if self._file is None:
            if not self.skewed:
                return
            try:
                self._file = MetricFile(self._path, fresh=self._fresh)
                self._pos = self._file.position(self._key)
                if not self._fresh:  # a reused pid carries on from its predecessor
                    self.skewed += self._file.stored_value(self._key)
            except OSError:
                self._file = None
                return  # a full disk: kept in memory, written with the next skewed stamp
        self._file.write(self._pos, self.skewed)
