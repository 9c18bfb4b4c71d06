import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.nps import Category, Counts, ci95, classify, compare


@pytest.mark.parametrize(
    ("score", "category"),
    [
        (0, Category.DETRACTOR),
        (6, Category.DETRACTOR),
        (7, Category.PASSIVE),
        (8, Category.PASSIVE),
        (9, Category.PROMOTER),
        (10, Category.PROMOTER),
    ],
)
def test_classify_boundaries(score: int, category: Category) -> None:
    assert classify(score) is category


@pytest.mark.parametrize("score", [-1, 11, 100])
def test_classify_rejects_out_of_range(score: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.10"):
        classify(score)


@pytest.mark.parametrize("score", [6.5, "7", True, None, 7.0])
def test_classify_rejects_non_integers(score: object) -> None:
    with pytest.raises(TypeError):
        classify(score)  # type: ignore[arg-type]


def test_nps_of_a_known_mix() -> None:
    counts = Counts.from_scores([10, 9, 9, 8, 3])  # 3 promoters, 1 passive, 1 detractor
    assert (counts.promoters, counts.passives, counts.detractors) == (3, 1, 1)
    assert counts.nps == pytest.approx(40.0)  # 100 * (3 - 1) / 5


def test_nps_is_none_without_responses() -> None:
    assert Counts().nps is None
    assert Counts().variance is None


def test_variance_formula() -> None:
    # p = 0.6, d = 0.2, n = 5: [0.6 + 0.2 - 0.4^2] / 5 = 0.128
    assert Counts(3, 1, 1).variance == pytest.approx(0.128)


def test_adjusted_wald_interval_by_hand() -> None:
    # P=30, Pa=10, D=10. n' = 53, p' = 30.75/53 = 0.580189, d' = 10.75/53 = 0.202830,
    # NPS' = 0.377358, V' = (0.783019 - 0.142399) / 53 = 0.0120872, half = 1.96 * 0.109942
    interval = ci95(Counts(30, 10, 10))
    assert interval.low == pytest.approx(16.19, abs=0.01)
    assert interval.high == pytest.approx(59.28, abs=0.01)


def test_adjusted_wald_interval_small_balanced_sample() -> None:
    # P=2, Pa=1, D=2: n' = 8, p' = d' = 2.75/8 = 0.34375, NPS' = 0, V' = 0.6875/8 = 0.0859375
    interval = ci95(Counts(2, 1, 2))
    half = 100 * 1.96 * math.sqrt(0.0859375)
    assert interval.low == pytest.approx(-half, abs=0.01)
    assert interval.high == pytest.approx(half, abs=0.01)


def test_interval_is_clipped_to_the_possible_range() -> None:
    # P=3: n' = 6, p' = 0.625, d' = 0.125, NPS' = 0.5, V' = 0.5/6, half = 1.96 * 0.288675 = 0.5658
    interval = ci95(Counts(3, 0, 0))
    assert interval.high == 100.0  # unclipped it would be 106.58
    assert interval.low == pytest.approx(-6.58, abs=0.01)


def test_interval_without_responses_is_wide_but_defined() -> None:
    # n' = 3, p' = d' = 0.25, NPS' = 0, V' = 0.5/3: +-1.96 * 0.408248 = +-80.02 points
    interval = ci95(Counts())
    assert interval.low == pytest.approx(-80.02, abs=0.01)
    assert interval.high == pytest.approx(80.02, abs=0.01)


def test_drop_z_by_hand() -> None:
    # baseline P=60 Pa=20 D=20: NPS' = 40/103 = 0.388350, V' = 0.00621793
    # current  P=20 Pa=10 D=20: NPS' = 0, V' = 0.0147739
    # z = (0 - 0.388350) / sqrt(0.00621793 + 0.0147739) = -2.6804
    result = compare(baseline=Counts(60, 20, 20), current=Counts(20, 10, 20))
    assert result.z == pytest.approx(-2.6804, abs=1e-3)
    assert result.difference == pytest.approx(-38.835, abs=1e-2)
    assert result.p_value_drop == pytest.approx(0.00368, abs=1e-4)


counts_strategy = st.builds(Counts, st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000))


@given(counts_strategy)
def test_nps_and_interval_stay_in_range(counts: Counts) -> None:
    interval = ci95(counts)
    assert -100.0 <= interval.low <= interval.high <= 100.0
    if counts.nps is not None:
        assert -100.0 <= counts.nps <= 100.0


@given(counts_strategy, counts_strategy)
def test_counts_add_and_subtract(a: Counts, b: Counts) -> None:
    assert (a + b) - b == a
    assert (a + b).n == a.n + b.n


@given(st.lists(st.integers(0, 10), max_size=200))
def test_from_scores_matches_the_definition(scores: list[int]) -> None:
    counts = Counts.from_scores(scores)
    assert counts.promoters == sum(1 for s in scores if s >= 9)
    assert counts.detractors == sum(1 for s in scores if s <= 6)
    assert counts.n == len(scores)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)), max_size=30))
def test_a_total_is_the_sum_of_its_terms(terms: list[tuple[int, int, int]]) -> None:
    many = [Counts(*t) for t in terms]
    assert Counts.total(many) == sum(many, Counts())
    assert Counts.total(iter(many)) == Counts.total(many)  # any iterable, read once
