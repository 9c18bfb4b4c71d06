import hashlib
import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring_service.domain import (
    Dimensions,
    SegmentPlan,
    Stored,
    Version,
    apply,
    candidate_values,
    parse_dimension,
    parse_segment,
    recompute,
    segments_of,
    split_segment,
)
from scoring_service.handlers import version_of
from scoring_service.repository import joined, split
from shared.events import ResponseEvent
from shared.nps import Counts
from shared.pseudonyms import Pseudonyms
from shared.windows import DayRange, Interval, buckets, series
from shared.wire import Erased, wire_of
from tests import scoring_model
from tests.helpers import TEST_PSEUDONYM_SECRET

PSEUDONYMS = Pseudonyms(TEST_PSEUDONYM_SECRET)
respondent_key = PSEUDONYMS.key

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DEFAULT = Dimensions()
COMBOS = Dimensions.parse("channel,survey_id,*", "product+region")


def version(rid: str = "r1", score: int = 9, v: int = 1, **kw: object) -> Version:
    return Version(
        response_id=rid,
        respondent_key=str(kw.get("key", "k1")),
        version=v,
        score=score,
        day=kw.get("day", date(2026, 11, 24)),  # type: ignore[arg-type]
        channel=kw.get("channel"),  # type: ignore[arg-type]
        survey_id=kw.get("survey_id"),  # type: ignore[arg-type]
        attributes=kw.get("attributes", {}),  # type: ignore[arg-type]
        at=kw.get("at", AT),  # type: ignore[arg-type]
    )


def open_plan(cap: int = 1_000) -> SegmentPlan:
    return SegmentPlan(set(), {}, cap)


def test_segments_of_a_response() -> None:
    r = version(channel="email", survey_id="q4", attributes={"region": "eu", "product": "atlas"})
    assert segments_of(r, DEFAULT, open_plan()) == (
        "all",
        "channel:email",
        "product:atlas",
        "region:eu",
        "survey_id:q4",
    )
    assert segments_of(r, COMBOS, open_plan())[-1] == "product:atlas,region:eu"


def test_only_configured_dimensions_count() -> None:
    r = version(channel="email", attributes={"region": "eu", "product": "atlas"})
    assert segments_of(r, Dimensions.parse("channel,product", ""), open_plan()) == (
        "all",
        "channel:email",
        "product:atlas",
    )
    assert segments_of(version(), DEFAULT, open_plan()) == ("all",)


def test_past_the_cap_new_values_count_under_other() -> None:
    plan = open_plan(cap=2)
    seen = [segments_of(version(f"r{i}", attributes={"product": f"p{i}"}), DEFAULT, plan)[1] for i in range(4)]
    assert seen == ["product:p0", "product:p1", "product:other", "product:other"]
    # a value admitted before stays itself
    assert segments_of(version("again", attributes={"product": "p1"}), DEFAULT, plan)[1] == "product:p1"


_ATTRIBUTES = st.lists(
    st.tuples(
        st.dictionaries(
            st.sampled_from(["product", "region", "tier"]), st.sampled_from(["a", "b", "eu", "us"]), max_size=3
        ),
        st.sampled_from([None, "email", "in_app"]),
        st.booleans(),  # the attributes in reverse order: the same response described differently
    ),
    max_size=40,
)


def _versions(drawn: list[tuple[dict[str, str], str | None, bool]]) -> list[Version]:
    return [
        version(f"r{i}", channel=channel, attributes=dict(reversed(attrs.items())) if flip else attrs)
        for i, (attrs, channel, flip) in enumerate(drawn)
    ]


@settings(max_examples=300, deadline=None)
@given(_ATTRIBUTES, st.integers(1, 4))
def test_a_batch_s_remembered_segments_are_what_computing_them_again_gives(
    drawn: list[tuple[dict[str, str], str | None, bool]], cap: int
) -> None:
    """The plan remembers each values list's and each description's segments for the batch; with
    the cap in play (values past it count under `other`, in combinations too), and the same
    attributes in another order, the answers equal computing each anew."""
    remembering, fresh = open_plan(cap), open_plan(cap)
    for v in _versions(drawn):
        fresh.answered.clear()
        fresh.described.clear()
        assert segments_of(v, COMBOS, remembering) == segments_of(v, COMBOS, fresh)
    assert remembering.known == fresh.known and remembering.per_dimension == fresh.per_dimension


@settings(max_examples=300, deadline=None)
@given(_ATTRIBUTES)
def test_a_batch_s_candidate_values_are_every_response_s_values(
    drawn: list[tuple[dict[str, str], str | None, bool]],
) -> None:
    """Worked out once per description, the pairs looked up are still every response's own."""
    versions = _versions(drawn)
    one_by_one: set[tuple[str, str]] = set()
    for v in versions:
        values = dict(COMBOS.values_of(v))
        one_by_one |= set(values.items()) | set(COMBOS.combined(values))
    assert candidate_values(versions, COMBOS) == one_by_one


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("all", "all"),
        ("channel:email", "channel:email"),
        ("product:a:b", "product:a:b"),
        ("region:eu,product:atlas", "product:atlas,region:eu"),
        ("product:atlas,region:eu", "product:atlas,region:eu"),
    ],
)
def test_parse_segment(text: str, key: str) -> None:
    assert parse_segment(text, COMBOS) == key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "channel",
        "channel:",
        ":email",
        "Channel:email",
        "9x:y",
        "a b:c",
        "product:a,plan:b",
        "product:a,product:b",
        "product:a\x00b",
        "product:a\x1fb",
    ],
)
def test_parse_segment_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_segment(text, COMBOS)


def test_unconfigured_dimensions_are_rejected() -> None:
    only = Dimensions.parse("channel", "")
    with pytest.raises(ValueError, match="not configured"):
        parse_segment("product:atlas", only)
    assert parse_dimension("region+product", COMBOS) == "product,region"
    with pytest.raises(ValueError, match="not configured"):
        parse_dimension("plan,region", COMBOS)
    with pytest.raises(ValueError):
        Dimensions.parse("channel", "product")  # a combination needs two parts


def test_split_segment_inverts_the_keys() -> None:
    assert split_segment("channel:email") == ("channel", "email")
    assert split_segment("product:a,b") == ("product", "a,b")  # a comma inside a value
    assert split_segment("product:atlas,region:eu") == ("product,region", "product:atlas,region:eu")


def test_respondent_key_is_a_keyed_hash_of_the_id() -> None:
    key = respondent_key("user-1842")
    assert key != "user-1842" and len(key) == 64
    # Not the plain SHA-256 anyone can recompute, and another secret gives another key ...
    assert key != hashlib.sha256(b"user-1842").hexdigest()
    assert key != Pseudonyms("another-secret-of-at-least-32-characters").key("user-1842")
    # ... but a stored plain SHA-256 converts to it without the id (the migrations' rekey).
    assert PSEUDONYMS.rekey(hashlib.sha256(b"user-1842").hexdigest()) == key
    with pytest.raises(ValueError, match="at least 32"):
        Pseudonyms("short")


def test_a_newer_version_moves_the_counts() -> None:
    first = apply(
        {}, [version(score=10, attributes={"product": "a"})], {}, lambda v: segments_of(v, DEFAULT, open_plan())
    )
    assert first.deltas == {
        ("all", date(2026, 11, 24)): Counts(1, 0, 0),
        ("product:a", date(2026, 11, 24)): Counts(1, 0, 0),
    }
    stored = {r.response_id: r for r in first.rows}
    revised = apply(
        stored, [version(score=3, v=2, attributes={"product": "b"})], {}, lambda v: segments_of(v, DEFAULT, open_plan())
    )
    day = date(2026, 11, 24)
    assert revised.deltas == {
        ("all", day): Counts(-1, 0, 1),
        ("product:a", day): Counts(-1, 0, 0),
        ("product:b", day): Counts(0, 0, 1),
    }
    # the old version arriving late changes nothing
    late = apply({r.response_id: r for r in revised.rows}, [version(score=10)], {}, lambda v: ("all",))
    assert (late.rows, late.deltas, late.versions_ignored) == ([], {}, 1)


def test_an_erasure_removes_earlier_responses_and_keeps_no_data() -> None:
    stored = Stored("r1", "k1", 1, AT, score=2, day=date(2026, 11, 24), segments=("all", "channel:web"))
    out = apply({"r1": stored}, [], {"k1": AT}, lambda v: ())
    assert out.deltas == {
        ("all", date(2026, 11, 24)): Counts(0, 0, -1),
        ("channel:web", date(2026, 11, 24)): Counts(0, 0, -1),
    }
    assert out.rows == [Stored("r1", "k1", 1, AT, erased=True)]
    # a redelivered submission stays erased; a response submitted after the erasure counts
    again = apply(
        {"r1": out.rows[0]},
        [version("r1", score=2), version("r2", at=AT.replace(hour=11))],
        {"k1": AT},
        lambda v: ("all",),
    )
    assert again.deltas == {("all", date(2026, 11, 24)): Counts(1, 0, 0)}


def settle(deliveries: Sequence[ResponseEvent], cuts: list[int], dims: Dimensions) -> dict[tuple[str, date], Counts]:
    """Apply deliveries batch by batch, as the handler does, keeping the stored rows in a dict."""
    stored: dict[str, Stored] = {}
    erasures: dict[str, datetime] = {}
    totals: dict[tuple[str, date], Counts] = {}
    plan = open_plan()
    bounds = sorted({0, len(deliveries), *(c % (len(deliveries) + 1) for c in cuts)})
    decoded = [wire_of(e) for e in deliveries]  # what the consumer hands the handler
    for start, end in itertools.pairwise(bounds):
        batch = decoded[start:end]
        versions = [version_of(e, PSEUDONYMS) for e in batch if not isinstance(e, Erased)]
        for e in batch:
            if isinstance(e, Erased):
                key = respondent_key(e.respondent_id)
                erasures[key] = max(erasures.get(key, e.requested_at), e.requested_at)
        keys = {respondent_key(e.respondent_id) for e in batch if isinstance(e, Erased)}
        existing = {
            rid: row
            for rid, row in stored.items()
            if rid in {v.response_id for v in versions} or row.respondent_key in keys
        }
        out = apply(existing, versions, erasures, lambda v: segments_of(v, dims, plan))
        stored.update({r.response_id: r for r in out.rows})
        for k, c in out.deltas.items():
            totals[k] = totals.get(k, Counts()) + c
        assert recompute(stored.values()) == {k: c for k, c in totals.items() if c != Counts()}
    return {k: c for k, c in totals.items() if c != Counts()}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), combos=st.booleans())
def test_counts_equal_a_recompute_whatever_the_delivery(data: st.DataObject, combos: bool) -> None:
    history = data.draw(scoring_model.histories())
    delivered = data.draw(scoring_model.deliveries(history))
    cuts = data.draw(st.lists(st.integers(0, 1_000), max_size=6))
    dims = COMBOS if combos else DEFAULT
    assert settle(delivered, cuts, dims) == scoring_model.recompute(history, combos=combos)


@pytest.mark.parametrize(
    ("interval", "first", "last", "expected"),
    [
        ("day", date(2026, 11, 1), date(2026, 11, 3), 3),
        ("week", date(2026, 11, 4), date(2026, 11, 23), 4),  # Wed..Sun, two full weeks, Mon
        ("month", date(2026, 1, 15), date(2026, 3, 2), 3),
    ],
)
def test_buckets_are_calendar_aligned_and_clipped(interval: Interval, first: date, last: date, expected: int) -> None:
    ranges = buckets(DayRange(first, last), interval)
    assert len(ranges) == expected
    assert ranges[0].first == first and ranges[-1].last == last
    assert all(b.first == a.last.fromordinal(a.last.toordinal() + 1) for a, b in itertools.pairwise(ranges))
    if interval == "week":
        assert [r.first.weekday() for r in ranges[1:]] == [0] * (expected - 1)
    if interval == "month":
        assert [r.first.day for r in ranges[1:]] == [1] * (expected - 1)


def test_series_sums_days_into_their_buckets() -> None:
    per_day = {
        date(2026, 11, 2): Counts(1, 0, 0),
        date(2026, 11, 8): Counts(0, 0, 1),
        date(2026, 11, 9): Counts(0, 1, 0),
    }
    points = series(per_day, DayRange(date(2026, 11, 1), date(2026, 11, 15)), "week")
    assert [(b.first.day, b.last.day, c) for b, c in points] == [
        (1, 1, Counts()),
        (2, 8, Counts(1, 0, 1)),
        (9, 15, Counts(0, 1, 0)),
    ]


def test_the_gauged_segments_are_checked_at_start_up_and_bounded() -> None:
    from pydantic import ValidationError

    from scoring_service.settings import MAX_METRIC_SEGMENTS, ScoringSettings

    combined = ScoringSettings(metric_segments="all; region:eu,product:atlas ;", combinations="product+region")
    assert combined.gauge_segments == ["all", "product:atlas,region:eu"]  # a combination's storage key
    with pytest.raises(ValidationError, match="at most 50"):
        ScoringSettings(metric_segments=";".join(f"plan:p{i}" for i in range(MAX_METRIC_SEGMENTS + 1)))
    with pytest.raises(ValidationError, match="'region:eu,product:atlas'"):
        ScoringSettings(metric_segments="region:eu,product:atlas")  # not a configured combination
    with pytest.raises(ValidationError, match="window"):
        ScoringSettings(metric_window="week")


@given(st.lists(st.text(st.characters(exclude_characters="\x1f"), min_size=1, max_size=12), max_size=6))
def test_stored_segments_read_back_as_written(segments: list[str]) -> None:
    """The one string a response's segments are stored as: none (an erased or new row) included."""
    assert split(joined(segments)) == tuple(segments)
