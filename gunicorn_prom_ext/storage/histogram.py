"""One histogram label set in a metric file: running values in memory, slots in the file.

prometheus_client's multiprocess format stores a histogram as one non-cumulative count
per bucket (key ``<name>_bucket`` with an ``le`` label) and one ``<name>_sum``; its
collector adds the buckets up at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from gunicorn_prom_ext.storage.files import MetricFile, le_label, series_key


def histogram_keys(
    name: str, help_text: str, bounds: Sequence[float], labels: dict[str, str]
) -> list[str]:
    """The file keys of one histogram label set: its buckets (not cumulative), then _sum."""
    keys = [
        series_key(name, name + "_bucket", {**labels, "le": le_label(bound)}, help_text)
        for bound in bounds
    ]
    keys.append(series_key(name, name + "_sum", labels, help_text))
    return keys


class FileHistogram:
    """One label set of one histogram: bucket and sum slots with running values.

    The running values live here, in memory; the file is their projection, so a file
    that goes away can be written again from here.
    """

    __slots__ = ("bounds", "counts", "file", "indexes", "keys", "sum", "sum_index")

    def __init__(
        self,
        file: MetricFile,
        name: str,
        help_text: str,
        bounds: Sequence[float],
        labels: dict[str, str],
    ) -> None:
        self.bounds = tuple(bounds)
        self.keys = histogram_keys(name, help_text, self.bounds, labels)
        # A reused file (a pid seen before) carries on from its predecessor's values.
        self.counts = [file.stored_value(key) for key in self.keys[:-1]]
        self.sum = file.stored_value(self.keys[-1])
        self.place(file)

    def place(self, file: MetricFile) -> None:
        """Point at the key slots of a file that has every key (see make_room)."""
        # Slots as indexes into the file's array of doubles (byte offset / 8).
        indexes = [file.position(key) >> 3 for key in self.keys]
        self.file = file
        self.indexes = indexes[:-1]
        self.sum_index = indexes[-1]

    def write_into(self, file: MetricFile) -> None:
        """Write this label set's values into a file (a new one; see relocate)."""
        for key, value in zip(self.keys, [*self.counts, self.sum], strict=True):
            file.write(file.position(key), value)

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)
        count = self.counts[i] + 1.0
        self.counts[i] = count
        doubles = self.file.doubles
        doubles[self.indexes[i]] = count
        self.sum += value
        doubles[self.sum_index] = self.sum
