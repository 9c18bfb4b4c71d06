from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from shared.windows import DayRange, parse_window, preceding, utc_day, window


@pytest.mark.parametrize(("text", "days"), [("1d", 1), ("7d", 7), ("30d", 30), ("90d", 90), ("365d", 365)])
def test_parse_window(text: str, days: int) -> None:
    assert parse_window(text) == days


@pytest.mark.parametrize("text", ["", "0d", "7", "d", "-7d", "7w", "7.5d", " 7d", "07d", "99999d"])
def test_parse_window_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


def test_window_is_today_and_the_days_before() -> None:
    assert window(date(2026, 11, 24), 7) == DayRange(date(2026, 11, 18), date(2026, 11, 24))
    assert window(date(2026, 11, 24), 1) == DayRange(date(2026, 11, 24), date(2026, 11, 24))
    assert window(date(2026, 3, 1), 30).first == date(2026, 1, 31)  # across February


def test_preceding_range_ends_the_day_before() -> None:
    current = window(date(2026, 11, 24), 7)
    baseline = preceding(current, 28)
    assert baseline == DayRange(date(2026, 10, 21), date(2026, 11, 17))
    assert baseline.days == 28
    assert baseline.last + timedelta(days=1) == current.first


def test_utc_day_uses_utc_not_local_time() -> None:
    minus_two = timezone(timedelta(hours=-2))
    assert utc_day(datetime(2026, 11, 24, 23, 30, tzinfo=minus_two)) == date(2026, 11, 25)
    assert utc_day(datetime(2026, 11, 24, 0, 30, tzinfo=timezone(timedelta(hours=3)))) == date(2026, 11, 23)
    assert utc_day(datetime(2026, 11, 24, 12, tzinfo=UTC)) == date(2026, 11, 24)


def test_utc_day_refuses_naive_timestamps() -> None:
    with pytest.raises(ValueError, match="time zone"):
        utc_day(datetime(2026, 11, 24, 12))


def test_day_range_membership() -> None:
    days = DayRange(date(2026, 11, 1), date(2026, 11, 7))
    assert date(2026, 11, 1) in days and date(2026, 11, 7) in days
    assert date(2026, 10, 31) not in days and date(2026, 11, 8) not in days


def test_a_retention_keeps_today_and_the_days_before_it_and_0_keeps_everything() -> None:
    from shared.windows import retention_cutoff

    assert retention_cutoff(date(2026, 11, 26), 90) == date(2026, 8, 29)  # 90 days: Aug 29 .. Nov 26
    assert retention_cutoff(date(2026, 11, 26), 1) == date(2026, 11, 26)
    assert retention_cutoff(date(2026, 11, 26), 0) is None
