"""shared/outbox's packed rows: what goes in comes out, byte for byte, in order."""

from __future__ import annotations

import zlib

import lz4.frame
from hypothesis import given
from hypothesis import strategies as st

from shared.outbox import Outgoing, pack, unpack

ITEMS = st.lists(st.builds(Outgoing, st.just("t"), st.none() | st.binary(max_size=40), st.binary(max_size=300)))


@given(ITEMS)
def test_packed_events_unpack_as_they_were(items: list[Outgoing]) -> None:
    assert unpack("t", pack(items)) == items


@given(ITEMS)
def test_rows_packed_before_lz4_still_unpack(items: list[Outgoing]) -> None:
    """Rows a relay had not published when the service was upgraded are zlib streams: they still
    unpack, and new rows are LZ4 frames."""
    framed = lz4.frame.decompress(pack(items))
    assert pack(items)[:4] == b"\x04\x22\x4d\x18"
    assert unpack("t", zlib.compress(framed, 1)) == items
