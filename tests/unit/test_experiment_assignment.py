"""Assignment to an experiment's arms (followup_service/experiments/assignment.py): stable, balanced
within sampling error, independent across experiments, and keyed (another secret, other arms)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.experiments.assignment import InvalidArms, arm_of, check_arms, position
from shared.pseudonyms import Pseudonyms
from tests.helpers import TEST_PSEUDONYM_SECRET

KEYS = Pseudonyms(TEST_PSEUDONYM_SECRET)
ARMS = [("control", 0.2), ("short", 0.4), ("long", 0.4)]
PEOPLE = [KEYS.key(f"person-{i}") for i in range(20_000)]


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=64))
def test_a_person_stays_in_one_arm(experiment: str, person: str) -> None:
    key = KEYS.key(person)
    first = arm_of(KEYS, experiment, key, ARMS)
    assert all(arm_of(KEYS, experiment, key, ARMS) == first for _ in range(3))
    assert arm_of(Pseudonyms(TEST_PSEUDONYM_SECRET), experiment, key, ARMS) == first  # another process, same secret


def test_arms_get_their_weights_within_sampling_error() -> None:
    counts = Counter(arm_of(KEYS, "welcome-v2", k, ARMS) for k in PEOPLE)
    for name, weight in ARMS:
        expected = weight * len(PEOPLE)
        sd = math.sqrt(len(PEOPLE) * weight * (1 - weight))
        assert abs(counts[name] - expected) < 4 * sd, (name, counts)


def test_two_experiments_assign_independently() -> None:
    """A person's arm in one experiment says nothing of their arm in another: the 2x2 table of a
    50/50 holdout in each is ~25% per cell (a chi-square test at 0.001)."""
    halves = [("treated", 0.5), ("held_out", 0.5)]
    cells = Counter((arm_of(KEYS, "passives", k, halves), arm_of(KEYS, "detractors", k, halves)) for k in PEOPLE)
    expected = len(PEOPLE) / 4
    chi2 = sum(
        (cells[(a, b)] - expected) ** 2 / expected for a in ("treated", "held_out") for b in ("treated", "held_out")
    )
    assert chi2 < 10.83, cells  # 1 degree of freedom


def test_another_secret_gives_other_arms() -> None:
    other = Pseudonyms("another-secret-of-at-least-32-characters!")
    differs = sum(position(KEYS, "x", k) != position(other, "x", k) for k in PEOPLE[:1000])
    assert differs == 1000
    same = sum(arm_of(KEYS, "x", k, [("a", 0.5), ("b", 0.5)]) == arm_of(other, "x", k, [("a", 0.5), ("b", 0.5)])
               for k in PEOPLE[:2000])  # fmt: skip
    assert 850 < same < 1150  # agreement by chance only


@pytest.mark.parametrize(
    ("arms", "says"),
    [
        ([("only", 1.0)], "at least two"),
        ([("a", 0.5), ("a", 0.5)], "named twice"),
        ([("a", 0.5), ("b", 0.4)], "sum to 0.9"),
        ([("a", 0.0), ("b", 1.0)], "not in (0, 1]"),
        ([("a", 1.2), ("b", -0.2)], "not in (0, 1]"),
    ],
)
def test_arms_a_policy_must_not_give(arms: list[tuple[str, float]], says: str) -> None:
    with pytest.raises(InvalidArms, match=says.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_arms(arms)
    check_arms([("a", 0.1), ("b", 0.2), ("c", 0.7)])  # sums to 1 in floating point too
