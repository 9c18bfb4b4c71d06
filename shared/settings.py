"""Settings every service shares. Each service subclasses `ServiceSettings` with its own env
prefix (NPS_INGEST_, NPS_SCORING_, ...); the infrastructure addresses keep their conventional
unprefixed names (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS) so one .env serves the whole loop."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True, slots=True)
class Topics:
    """Versioned topic names under one namespace (default `nps`)."""

    namespace: str = "nps"

    @property
    def responses(self) -> str:
        return f"{self.namespace}.responses.v1"

    @property
    def scores(self) -> str:
        return f"{self.namespace}.scores.v1"

    @property
    def followups(self) -> str:
        return f"{self.namespace}.followups.v1"

    @property
    def tickets(self) -> str:
        return f"{self.namespace}.tickets.v1"

    @property
    def alerts(self) -> str:
        return f"{self.namespace}.alerts.v1"

    @property
    def deadletter(self) -> str:
        return f"{self.namespace}.deadletter.v1"

    def all(self) -> list[str]:
        return [self.responses, self.scores, self.followups, self.tickets, self.alerts, self.deadletter]


class InfraSettings(BaseSettings):
    """Where the broker and the database are. Used by the launcher and by every service."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    kafka_bootstrap_servers: str | None = Field(default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    topic_namespace: str = Field(default="nps", validation_alias="NPS_TOPIC_NAMESPACE")
    topic_partitions: int = Field(default=6, ge=1, validation_alias="NPS_TOPIC_PARTITIONS")
    topic_replication: int = Field(default=1, ge=1, validation_alias="NPS_TOPIC_REPLICATION")
    log_level: str = Field(default="INFO", validation_alias="NPS_LOG_LEVEL")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_namespace)

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError("DATABASE_URL is not set (run through `nps up`, or export it)")
        return async_url(self.database_url.get_secret_value())

    def require_bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set (run through `nps up`, or export it)")
        return self.kafka_bootstrap_servers


class ServiceSettings(InfraSettings):
    host: str = "127.0.0.1"
    port: int = 8000

    # Consumer group timings. Apache Kafka's floor for the session timeout is 6 s
    # (group.min.session.timeout.ms); the local broker accepts less, and the tests use less
    # so a restarted consumer rejoins in about 4 s instead of about 18 s.
    consumer_session_timeout_ms: int = Field(default=10_000, validation_alias="NPS_CONSUMER_SESSION_TIMEOUT_MS")
    consumer_heartbeat_ms: int = Field(default=3_000, validation_alias="NPS_CONSUMER_HEARTBEAT_MS")
    consumer_rebalance_timeout_ms: int = Field(default=10_000, validation_alias="NPS_CONSUMER_REBALANCE_TIMEOUT_MS")
    # One transaction per batch: 10,000 events is ~0.5 s of scoring work, short enough that a
    # SIGTERM drains quickly, long enough to amortise the round trips (make bench: 5,000 gave
    # ~19,500 events/s, 10,000 ~23,000).
    consumer_max_batch: int = Field(default=10_000, ge=1, validation_alias="NPS_CONSUMER_MAX_BATCH")
    consumer_poll_ms: int = Field(default=200, ge=1, validation_alias="NPS_CONSUMER_POLL_MS")
    # A bug that makes every message undecodable must stop the loop, not divert the whole
    # topic into the dead-letter queue: past this many in a row, the loop fails loudly.
    deadletter_max_consecutive: int = Field(default=1_000, ge=1, validation_alias="NPS_DEADLETTER_MAX_CONSECUTIVE")


def async_url(url: str) -> str:
    """Accept the usual postgres:// and postgresql:// forms and pick the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")
