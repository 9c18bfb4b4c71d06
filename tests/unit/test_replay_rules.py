"""The rules the replay watermark advances by (ingest_service/replay.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest_service.replay import Sample, ends_of, reached, went_back

RESP, INV = "nps.responses.v1", "nps.invitations.v1"


def test_the_watermark_is_the_newest_sample_every_group_has_read() -> None:
    at = [datetime(2026, 11, 26, 10, 0, s, tzinfo=UTC) for s in range(3)]
    samples = [
        Sample(at[0], {RESP: {0: 5, 1: 0}}),
        Sample(at[1], {RESP: {0: 9, 1: 2}}),
        Sample(at[2], {RESP: {0: 12, 1: 4}}),
    ]
    assert reached(samples, [(RESP, {0: 9, 1: 2}), (RESP, {0: 10, 1: 3})]) == 1
    assert (
        reached(samples, [(RESP, {0: 12, 1: 4}), (RESP, {0: 4})]) is None
    )  # the second group is behind the first sample
    assert reached(samples, [(RESP, {0: 12, 1: 4})]) == 2
    assert reached([Sample(at[0], {RESP: {0: 0, 1: 0}})], [(RESP, {})]) == 0  # nothing published, nothing to read
    assert went_back({RESP: {0: 9, 1: 2}}, {RESP: {0: 9, 1: 3}}) == []
    assert went_back({RESP: {0: 9, 1: 2}}, {RESP: {0: 0, 1: 3}}) == [(RESP, 0)]


def test_each_group_is_held_to_its_own_topic_only() -> None:
    at = [datetime(2026, 12, 7, 10, 0, s, tzinfo=UTC) for s in range(2)]
    samples = [Sample(at[0], {RESP: {0: 5}, INV: {0: 3}}), Sample(at[1], {RESP: {0: 9}, INV: {0: 8}})]
    # every response read, but the rates group (invitations) only past the first sample
    assert reached(samples, [(RESP, {0: 9}), (INV, {0: 3})]) == 0
    assert reached(samples, [(RESP, {0: 9}), (INV, {0: 8})]) == 1
    # a group of the responses topic is not held to the invitations' offsets (nor the other way)
    assert reached(samples, [(RESP, {0: 9})]) == 1
    assert reached(samples, [(INV, {0: 2})]) is None
    assert went_back({RESP: {0: 9}, INV: {0: 8}}, {RESP: {0: 9}, INV: {0: 0}}) == [(INV, 0)]


def test_end_offsets_stored_before_the_second_topic_read_as_the_responses_topic() -> None:
    assert ends_of({"0": 12, "1": 4}, RESP) == {RESP: {0: 12, 1: 4}}
    assert ends_of({RESP: {"0": 12}, INV: {"0": 3, "2": 1}}, RESP) == {RESP: {0: 12}, INV: {0: 3, 2: 1}}
    assert ends_of(None, RESP) == {} and ends_of({}, RESP) == {}
