"""shared/sealed.py: sealed secrets open only with their key, for their row, unaltered; rotation."""

from __future__ import annotations

import pytest

from shared.sealed import CannotOpen, Sealer, is_sealed, new_key, parse_key

PLACE = "delivery.subscriptions:wh_000000000000000000000001"


def test_a_sealed_value_opens_for_its_place_and_hides_the_secret() -> None:
    sealer = Sealer.of(new_key())
    sealed = sealer.seal("whsec_plain", PLACE)
    assert is_sealed(sealed) and "whsec_plain" not in sealed
    assert sealer.open(sealed, PLACE) == "whsec_plain"
    assert sealer.seal("whsec_plain", PLACE) != sealed  # a fresh nonce each time


def test_it_does_not_open_with_another_key_for_another_row_or_altered() -> None:
    sealer = Sealer.of(new_key())
    sealed = sealer.seal("whsec_plain", PLACE)
    with pytest.raises(CannotOpen, match="neither NPS_SECRETS_KEY"):
        Sealer.of(new_key()).open(sealed, PLACE)
    with pytest.raises(CannotOpen, match="moved from another row"):
        sealer.open(sealed, "delivery.subscriptions:wh_000000000000000000000002")
    body = sealed.rsplit(":", 1)[1]
    flipped = sealed[: -len(body)] + ("A" if body[5] != "A" else "B").join([body[:5], body[6:]])
    with pytest.raises(CannotOpen):
        sealer.open(flipped, PLACE)
    with pytest.raises(CannotOpen, match="not a sealed value"):
        sealer.open("whsec_plain", PLACE)


def test_after_a_rotation_old_values_open_and_new_ones_use_the_new_key() -> None:
    old, new = new_key(), new_key()
    before = Sealer.of(old).seal("whsec_plain", PLACE)
    rotating = Sealer.of(new, previous=old)
    assert rotating.open(before, PLACE) == "whsec_plain"
    assert not rotating.is_current(before)
    after = rotating.seal(rotating.open(before, PLACE), PLACE)
    assert rotating.is_current(after) and Sealer.of(new).open(after, PLACE) == "whsec_plain"


@pytest.mark.parametrize("bad", ["", "not base64 !!", "c2hvcnQ"])
def test_a_bad_key_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError, match="nps secrets new-key") as raised:
        parse_key(bad)
    assert bad not in str(raised.value) or not bad
