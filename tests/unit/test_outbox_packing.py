"""shared/outbox's packed rows: what goes in comes out, byte for byte, in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.outbox import Outgoing, pack, unpack

ITEMS = st.lists(st.builds(Outgoing, st.just("t"), st.none() | st.binary(max_size=40), st.binary(max_size=300)))


@given(ITEMS)
def test_packed_events_unpack_as_they_were(items: list[Outgoing]) -> None:
    assert unpack("t", pack(items)) == items
