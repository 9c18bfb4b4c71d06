from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from followup_service.contact.domain import ContactRules
from followup_service.tickets.domain import Priority
from shared.settings import ServiceSettings


class Sla(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_contact_s: float = Field(gt=0)
    resolution_s: float = Field(gt=0)


DEFAULT_SLA: dict[Priority, Sla] = {
    "urgent": Sla(first_contact_s=3_600, resolution_s=86_400),
    "high": Sla(first_contact_s=4 * 3_600, resolution_s=2 * 86_400),
    "normal": Sla(first_contact_s=24 * 3_600, resolution_s=5 * 86_400),
    "low": Sla(first_contact_s=72 * 3_600, resolution_s=14 * 86_400),
}


class FollowUpSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_FOLLOWUP_", env_file=".env", extra="ignore")

    port: int = Field(default=8002, description="follow-up's HTTP port")
    group_id: str = Field(default="nps-followup", description="follow-up's consumer group")
    sla: dict[Priority, Sla] = Field(
        default_factory=lambda: dict(DEFAULT_SLA),
        description="per ticket priority, the seconds to first contact and to resolution (JSON, e.g. "
        '`{"urgent": {"first_contact_s": 3600, "resolution_s": 86400}, ...}`); a missed deadline publishes '
        "`TicketSlaBreached` once. Defaults: urgent 1 h / 1 d, high 4 h / 2 d, normal 24 h / 5 d, low 72 h / 14 d",
    )
    policy: Path | None = Field(
        default=None,
        description="the follow-up policy file (YAML; docs/followup.md); unset: the default policy (promoters to "
        "referral, passives to education, detractors to a ticket). A bad file stops the service from starting",
    )
    shards: int = Field(
        default=2,
        ge=1,
        le=16,
        description="transactions a batch of responses is applied in at once, its people split between them: "
        "while one waits on PostgreSQL the others' routing goes on (make bench: 2 gave ~10% more than 1, 4 no "
        "more than 2). Each uses a database connection",
    )
    # Contact rules: survey fatigue and consent (docs/followup.md, "Contact rules").
    contact_min_days: float = Field(
        default=30, ge=0, description="at most one follow-up message of a kind to a person per this many days"
    )
    contact_min_days_by_kind: dict[str, float] = Field(
        default_factory=dict,
        description='the same, per action kind (JSON, e.g. `{"referral": 90}`); kinds not named use the one above',
    )
    contact_max_per_window: int = Field(
        default=3, ge=1, description="at most this many follow-up messages to a person in any window"
    )
    contact_window_days: float = Field(default=90, gt=0, description="the window of the limit above, in days")
    survey_min_days: float = Field(
        default=90, ge=0, description="`GET /v1/respondents/{id}/contact` says not to survey a person again sooner"
    )

    def contact_rules(self) -> ContactRules:
        return ContactRules(
            default_min_days=self.contact_min_days,
            min_days_between=dict(self.contact_min_days_by_kind),
            max_per_window=self.contact_max_per_window,
            window_days=self.contact_window_days,
        )

    outbox_interval_s: float = Field(
        default=1.0, gt=0, description="how soon a ticket change made through the API is published (`TicketUpdated`)"
    )
    sla_check_s: float = Field(
        default=10.0,
        gt=0,
        description="how often active tickets are checked against their SLAs (`TicketSlaBreached` is published up to "
        "this late) and the `nps_tickets_active` gauge is read; each check reads every active ticket",
    )
