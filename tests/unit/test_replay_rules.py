"""The rules the replay watermark advances by (ingest_service/replay.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest_service.replay import Sample, ends_of, reached, went_back

R, I = "nps.responses.v1", "nps.invitations.v1"


def test_the_watermark_is_the_newest_sample_every_group_has_read() -> None:
    at = [datetime(2026, 11, 26, 10, 0, s, tzinfo=UTC) for s in range(3)]
    samples = [Sample(at[0], {R: {0: 5, 1: 0}}), Sample(at[1], {R: {0: 9, 1: 2}}), Sample(at[2], {R: {0: 12, 1: 4}})]
    assert reached(samples, [(R, {0: 9, 1: 2}), (R, {0: 10, 1: 3})]) == 1
    assert reached(samples, [(R, {0: 12, 1: 4}), (R, {0: 4})]) is None  # the second group is behind the first sample
    assert reached(samples, [(R, {0: 12, 1: 4})]) == 2
    assert reached([Sample(at[0], {R: {0: 0, 1: 0}})], [(R, {})]) == 0  # nothing published, nothing to read
    assert went_back({R: {0: 9, 1: 2}}, {R: {0: 9, 1: 3}}) == []
    assert went_back({R: {0: 9, 1: 2}}, {R: {0: 0, 1: 3}}) == [(R, 0)]


def test_each_group_is_held_to_its_own_topic_only() -> None:
    at = [datetime(2026, 12, 7, 10, 0, s, tzinfo=UTC) for s in range(2)]
    samples = [Sample(at[0], {R: {0: 5}, I: {0: 3}}), Sample(at[1], {R: {0: 9}, I: {0: 8}})]
    # every response read, but the rates group (invitations) only past the first sample
    assert reached(samples, [(R, {0: 9}), (I, {0: 3})]) == 0
    assert reached(samples, [(R, {0: 9}), (I, {0: 8})]) == 1
    # a group of the responses topic is not held to the invitations' offsets (nor the other way)
    assert reached(samples, [(R, {0: 9})]) == 1
    assert reached(samples, [(I, {0: 2})]) is None
    assert went_back({R: {0: 9}, I: {0: 8}}, {R: {0: 9}, I: {0: 0}}) == [(I, 0)]


def test_end_offsets_stored_before_the_second_topic_read_as_the_responses_topic() -> None:
    assert ends_of({"0": 12, "1": 4}, R) == {R: {0: 12, 1: 4}}
    assert ends_of({R: {"0": 12}, I: {"0": 3, "2": 1}}, R) == {R: {0: 12}, I: {0: 3, 2: 1}}
    assert ends_of(None, R) == {} and ends_of({}, R) == {}
