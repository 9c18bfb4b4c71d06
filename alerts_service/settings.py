from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from alerts_service.detection import DropRule, EwmaRule, IncidentRule, RateRule, Rules, SilenceRule
from alerts_service.domain import Timing
from shared.settings import ServiceSettings

_DROP, _EWMA, _INCIDENT, _SILENCE, _TIMING = DropRule(), EwmaRule(), IncidentRule(), SilenceRule(), Timing()
_RATE = RateRule()


class AlertSettings(ServiceSettings):
    """Each rule's defaults are the ones docs/alerts.md's simulator table was printed with."""

    model_config = SettingsConfigDict(env_prefix="NPS_ALERTS_", env_file=".env", extra="ignore")

    port: int = Field(default=8003, description="alerts' HTTP port")
    group_id: str = Field(default="nps-alerts", description="alerts' consumer group")
    evaluate_interval_s: float = Field(
        default=60.0, gt=0, description="seconds between evaluation rounds (a round also follows each batch of scores)"
    )
    min_round_gap_s: float = Field(
        default=5.0, ge=0, description="seconds at least between two rounds asked for by batches of scores"
    )
    # drop: current window vs the baseline before it
    drop_enabled: bool = Field(
        default=True, description="the drop rule: current window vs baseline, BH across segments"
    )
    drop_current_days: int = Field(
        default=_DROP.current_days, ge=1, le=366, description="drop: the current window, days"
    )
    drop_baseline_days: int = Field(
        default=_DROP.baseline_days, ge=1, le=366, description="drop: the baseline window (the days before the current)"
    )
    drop_min_points: float = Field(
        default=_DROP.min_drop_points, ge=0, description="drop: fire only for a drop of at least this many NPS points"
    )
    # No verdicts on samples of twelve.
    drop_min_responses: int = Field(
        default=_DROP.min_responses, ge=1, description="drop: responses each window needs before any verdict"
    )
    drop_q: float = Field(
        default=_DROP.q, gt=0, lt=1, description="drop: false discovery rate held across one round's segments (BH)"
    )
    ewma_enabled: bool = Field(default=True, description="the slow-decline rule: EWMA of the daily NPS")
    ewma_lambda: float = Field(default=_EWMA.lam, gt=0, le=1, description="ewma: weight of the newest day")
    ewma_limit: float = Field(default=_EWMA.limit, gt=0, description="ewma: fire this many SDs below the reference")
    ewma_reference_days: int = Field(
        default=_EWMA.reference_days, ge=1, le=366, description="ewma: days that set the in-control mean (warm-up)"
    )
    ewma_monitored_days: int = Field(
        default=_EWMA.monitored_days, ge=1, le=366, description="ewma: days the EWMA runs over, after the reference"
    )
    ewma_min_reference: int = Field(
        default=_EWMA.min_reference, ge=1, description="ewma: responses the reference needs before any verdict"
    )
    incident_enabled: bool = Field(default=True, description="the incident rule: a spike in the detractor share")
    incident_minutes: int = Field(
        default=_INCIDENT.minutes, ge=5, le=1440, description="incident: how far back 'recent' reaches, minutes"
    )
    incident_min_detractors: int = Field(
        default=_INCIDENT.min_detractors, ge=1, description="incident: recent detractors needed before it can fire"
    )
    incident_alpha: float = Field(
        default=_INCIDENT.alpha, gt=0, lt=1, description="incident: the binomial test's level, per segment and round"
    )
    silence_enabled: bool = Field(default=True, description="the silence rule: a segment stops receiving responses")
    silence_multiple: float = Field(
        default=_SILENCE.multiple, gt=1, description="silence: fire after this many usual gaps without a response"
    )
    silence_min_hours: float = Field(
        default=_SILENCE.min_silence.total_seconds() / 3600,
        gt=0,
        description="silence: and never before this many hours",
    )
    silence_min_baseline: int = Field(
        default=_SILENCE.min_baseline, ge=1, description="silence: baseline responses a segment needs to be watched"
    )
    response_rate_enabled: bool = Field(
        default=True,
        description="the response-rate rule: the invitations' response rate vs the baseline's (the drop rule's "
        "windows, minimum count of invitations and q)",
    )
    response_rate_settle_days: int = Field(
        default=_RATE.settle_days,
        ge=0,
        le=30,
        description="response_rate: both windows end this many days before today (younger invitations' answers "
        "are still coming); raise it for surveys answered late",
    )
    response_rate_min_points: float = Field(
        default=_RATE.min_drop_points,
        ge=0,
        description="response_rate: fire only for a fall of at least this many percentage points",
    )
    for_evaluations: int = Field(
        default=_TIMING.for_evaluations, ge=1, description="rounds a condition must hold before an alert fires"
    )
    for_s: float = Field(default=_TIMING.for_s, ge=0, description="...and for at least this many seconds")
    clear_s: float = Field(
        default=_TIMING.clear_s,
        ge=0,
        description="hysteresis: seconds a firing alert's condition must stay clear to resolve",
    )
    cooldown_s: float = Field(
        default=_TIMING.cooldown_s,
        ge=0,
        description="after resolving, seconds before the same rule and segment may fire",
    )

    themes_url: str | None = Field(
        default=None,
        description="the themes service (http://host:8005): a fired drop alert asks it for the themes that drive "
        "the drop; unset: alerts carry no drivers (`nps up` sets it)",
    )
    themes_api_key: SecretStr | None = Field(
        default=None, description="an API key with scope scores:read for NPS_ALERTS_THEMES_URL (`nps up` makes one)"
    )
    drivers_top: int = Field(default=3, ge=1, le=20, description="drivers attached to a fired drop alert, at most")
    drivers_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="seconds a round waits for the themes service before firing without drivers",
    )

    def rules(self) -> Rules:
        return Rules(
            drop=DropRule(
                self.drop_enabled,
                self.drop_current_days,
                self.drop_baseline_days,
                self.drop_min_points,
                self.drop_min_responses,
                self.drop_q,
            ),
            ewma=EwmaRule(
                self.ewma_enabled,
                self.ewma_lambda,
                self.ewma_limit,
                self.ewma_reference_days,
                self.ewma_monitored_days,
                self.ewma_min_reference,
            ),
            incident=IncidentRule(
                self.incident_enabled, self.incident_minutes, self.incident_min_detractors, self.incident_alpha
            ),
            silence=SilenceRule(
                self.silence_enabled,
                self.silence_multiple,
                timedelta(hours=self.silence_min_hours),
                self.silence_min_baseline,
            ),
            response_rate=RateRule(
                self.response_rate_enabled, self.response_rate_settle_days, self.response_rate_min_points
            ),
        )

    def timing(self) -> Timing:
        return Timing(self.for_evaluations, self.for_s, self.clear_s, self.cooldown_s)
