"""`If-Match` on PATCH /v1/tickets/{id} reads RFC 9110 (section 8.8.3, strong comparison): which
versions a header accepts, which headers are well formed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.tickets.api import parse_if_match
from shared.problems import ProblemError


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"3"', {3}),
        (' "3" ', {3}),
        ('"1", "3"', {1, 3}),
        ('"1","3"', {1, 3}),
        ('"a,b", "3"', {3}),  # a comma inside a tag is part of it
        ('W/"3"', set()),  # weak: never matches under strong comparison
        ('"abc"', set()),
        ('"03"', set()),  # not the ETag of version 3 ("3")
        ('""', set()),
    ],
)
def test_well_formed_headers_accept_only_their_strong_ticket_tags(header: str, versions: set[int]) -> None:
    assert parse_if_match(header) == frozenset(versions)


def test_star_is_any_version_and_a_missing_header_is_428() -> None:
    assert parse_if_match("*") is None
    with pytest.raises(ProblemError) as missing:
        parse_if_match(None)
    assert missing.value.status == 428


@pytest.mark.parametrize("header", ["3", '"3', "three", "", '"3" "4"', ' ,"3"', "W/3", '"3"x'])
def test_headers_that_are_not_entity_tags_are_422(header: str) -> None:
    with pytest.raises(ProblemError) as refused:
        parse_if_match(header)
    assert refused.value.status == 422


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 10**9 - 1)), min_size=1, max_size=5))
def test_a_list_accepts_exactly_its_strong_versions(tags: list[tuple[bool, int]]) -> None:
    header = ", ".join(f'{"W/" if weak else ""}"{version}"' for weak, version in tags)
    assert parse_if_match(header) == frozenset(v for weak, v in tags if not weak)
