"""The rules the replay watermark advances by (ingest_service/replay.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest_service.replay import Sample, reached, went_back


def test_the_watermark_is_the_newest_sample_every_group_has_read() -> None:
    at = [datetime(2026, 11, 26, 10, 0, s, tzinfo=UTC) for s in range(3)]
    samples = [Sample(at[0], {0: 5, 1: 0}), Sample(at[1], {0: 9, 1: 2}), Sample(at[2], {0: 12, 1: 4})]
    assert reached(samples, [{0: 9, 1: 2}, {0: 10, 1: 3}]) == 1
    assert reached(samples, [{0: 12, 1: 4}, {0: 4}]) is None  # the second group is behind the first sample
    assert reached(samples, [{0: 12, 1: 4}]) == 2
    assert reached([Sample(at[0], {0: 0, 1: 0})], [{}]) == 0  # nothing published, nothing to read
    assert went_back({0: 9, 1: 2}, {0: 9, 1: 3}) == []
    assert went_back({0: 9, 1: 2}, {0: 0, 1: 3}) == [0]
