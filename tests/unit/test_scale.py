"""The examples the property-based and fuzzing tests draw (tests/scale.py): `make test-deep` scales them."""

from __future__ import annotations

import pytest

from tests.scale import examples


def test_examples_are_as_written_unless_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NPS_TEST_EXAMPLES_SCALE", raising=False)
    assert examples(12) == 12
    monkeypatch.setenv("NPS_TEST_EXAMPLES_SCALE", "5")
    assert examples(12) == 60
    monkeypatch.setenv("NPS_TEST_EXAMPLES_SCALE", "0.01")
    assert examples(12) == 1  # never none at all


def test_a_scale_that_draws_nothing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPS_TEST_EXAMPLES_SCALE", "0")
    with pytest.raises(ValueError, match="above 0"):
        examples(12)
