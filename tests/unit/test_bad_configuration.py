"""A service or command started with a bad or missing setting stops at once (exit 2) with the
variable and the reason on one line, never a traceback."""

from __future__ import annotations

import pytest

from services.cli import main


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("[]", "NPS_SCORING_CONSUMERS: Value error, name at least one"),
        ('["counts", "counts"]', "NPS_SCORING_CONSUMERS: Value error, a consumer named twice"),
        ('["scores"]', "NPS_SCORING_CONSUMERS: Input should be 'counts' or 'rates'"),
        ("counts", 'field "consumers"'),  # not JSON
    ],
)
def test_a_bad_consumers_setting_stops_scoring_saying_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, said: str
) -> None:
    monkeypatch.setenv("NPS_SCORING_CONSUMERS", value)
    assert main(["scoring"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("nps scoring: bad configuration: ") and said in error, error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("service", "variable"), [("scoring", "NPS_PSEUDONYM_SECRET"), ("delivery", "NPS_SECRETS_KEY")]
)
def test_a_service_without_a_secret_it_needs_stops_saying_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], service: str, variable: str
) -> None:
    monkeypatch.setenv("NPS_PSEUDONYM_SECRET", "s" * 32)  # the other secret set: the one named is what is missing
    monkeypatch.setenv("NPS_SECRETS_KEY", "k" * 43)
    monkeypatch.delenv(variable)
    assert main([service]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"nps {service}: bad configuration: {variable} is not set"), error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("service", "variable", "value", "said"),
    [
        ("ingest", "NPS_INGEST_PORT", "abc", "NPS_INGEST_PORT: Input should be a valid integer"),
        ("followup", "NPS_FOLLOWUP_SLA_CHECK_S", "0", "NPS_FOLLOWUP_SLA_CHECK_S: Input should be greater than 0"),
        ("alerts", "NPS_LOG_FORMAT", "xml", "NPS_LOG_FORMAT: Input should be"),  # one name for every service
    ],
)
def test_a_bad_setting_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    service: str,
    variable: str,
    value: str,
    said: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main([service]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"nps {service}: bad configuration: ") and said in error, error
