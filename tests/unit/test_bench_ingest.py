"""The benches report the median run, with the range of the runs."""

from bench.common import spread
from bench.ingest import WrkResult, middle, rounds_of


def run(name: str, rate: float, per_request: int = 1) -> WrkResult:
    return WrkResult(name, 64, 15, rate, 1.0, 2.0, 0, per_request)


def test_each_row_is_its_median_round_with_the_range() -> None:
    results = [run("single", 12_000), run("batch", 50, 1000), run("single", 11_000), run("single", 13_000)]
    found = rounds_of(results)
    assert [r.requests_per_s for r in found["single"]] == [12_000, 11_000, 13_000]
    assert middle(found["single"]).requests_per_s == 12_000
    assert spread([r.requests_per_s for r in found["single"]]) == "12,000 (11,000 to 13,000)"
    assert spread([r.items_per_s for r in found["batch"]]) == "50,000"
    assert spread([1.096, 0.984, 1.092], "{:.3f} s") == "1.092 s (0.984 s to 1.096 s)"
