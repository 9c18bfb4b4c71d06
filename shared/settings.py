"""Settings every service shares. Each service subclasses `ServiceSettings` with its own env
prefix (NPS_INGEST_, NPS_SCORING_, ...); the infrastructure addresses keep their conventional
unprefixed names (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS) so one .env serves the whole loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.pseudonyms import Pseudonyms
from shared.sealed import Sealer, SecretsKeyMissing


class PseudonymSecretMissing(RuntimeError):
    """NPS_PSEUDONYM_SECRET is not set and a service needs it: it stops at start, saying so."""


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
        return f"{self.namespace}.alerts.v2"

    @property
    def invitations(self) -> str:
        return f"{self.namespace}.invitations.v1"

    @property
    def contact(self) -> str:
        return f"{self.namespace}.contact.v1"

    @property
    def deadletter(self) -> str:
        return f"{self.namespace}.deadletter.v1"

    def all(self) -> list[str]:
        return [
            self.responses,
            self.scores,
            self.followups,
            self.tickets,
            self.alerts,
            self.invitations,
            self.deadletter,
        ]


class InfraSettings(BaseSettings):
    """Where the broker and the database are. Used by the launcher and by every service."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="`postgresql://user:pass@host:5432/db`. If set, `nps up` uses it instead of starting the "
        "embedded PostgreSQL.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="`host:9092,host2:9092`. If set, `nps up` uses it instead of starting the embedded broker.",
    )
    topic_namespace: str = Field(
        default="nps", validation_alias="NPS_TOPIC_NAMESPACE", description="topic prefix (`nps.responses.v1`, ...)"
    )
    topic_partitions: int = Field(
        default=6,
        ge=1,
        validation_alias="NPS_TOPIC_PARTITIONS",
        description="partitions of the topics `nps topics` creates",
    )
    topic_replication: int = Field(
        default=1,
        ge=1,
        validation_alias="NPS_TOPIC_REPLICATION",
        description="replication factor of the topics `nps topics` creates (3 on a real cluster)",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        validation_alias="NPS_METRICS_TOKEN",
        description="if set, /metrics answers only `Authorization: Bearer <token>` (for service ports that are public)",
    )
    pseudonym_secret: SecretStr | None = Field(
        default=None,
        validation_alias="NPS_PSEUDONYM_SECRET",
        description="the secret (32+ characters) of the keyed hash that turns respondent ids into the keys services "
        "keep for erasure; the same for every service, never changed. `nps up` with the embedded database makes "
        "one in var/pseudonym-secret",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        validation_alias="NPS_SECRETS_KEY",
        description="the key (32 bytes, base64url: `nps secrets new-key`) that seals the secrets the loop keeps usable "
        "(webhook signing secrets) in the database; delivery refuses to start without it once such secrets exist. "
        "`nps up` with the embedded database makes one in var/secrets-key",
    )
    secrets_key_previous: SecretStr | None = Field(
        default=None,
        validation_alias="NPS_SECRETS_KEY_PREVIOUS",
        description="during a key rotation: the old key, so values it sealed still open until `nps secrets rotate` "
        "has re-sealed them",
    )
    log_level: str = Field(
        default="INFO",
        validation_alias="NPS_LOG_LEVEL",
        description="`DEBUG` is the only level that may show personal data",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        validation_alias="NPS_LOG_FORMAT",
        description="`json`: one object per line (time, level, service, logger, message, ids); `text`: for a "
        "terminal; `auto`: text when stderr is a terminal, else json",
    )

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_namespace)

    @property
    def metrics_secret(self) -> str | None:
        return self.metrics_token.get_secret_value() if self.metrics_token else None

    def pseudonyms(self) -> Pseudonyms:
        if self.pseudonym_secret is None:
            raise PseudonymSecretMissing(
                "NPS_PSEUDONYM_SECRET is not set: every service that keeps respondent keys needs the same secret "
                "(`nps up` makes one for the embedded database; in production generate one, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, and keep it with DATABASE_URL)"
            )
        return Pseudonyms(self.pseudonym_secret.get_secret_value())

    def sealer(self) -> Sealer:
        if self.secrets_key is None:
            raise SecretsKeyMissing(
                "NPS_SECRETS_KEY is not set: the webhook signing secrets are kept sealed with it (`nps up` makes "
                "one for the embedded database; in production `nps secrets new-key`, kept with DATABASE_URL)"
            )
        previous = self.secrets_key_previous.get_secret_value() if self.secrets_key_previous else None
        return Sealer.of(self.secrets_key.get_secret_value(), previous)

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError("DATABASE_URL is not set (run through `nps up`, or export it)")
        return async_url(self.database_url.get_secret_value())

    def require_bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set (run through `nps up`, or export it)")
        return self.kafka_bootstrap_servers


class ServiceSettings(InfraSettings):
    host: str = Field(default="127.0.0.1", description="the address the service's HTTP API binds")
    port: int = Field(default=8000, description="the service's HTTP port")
    rate_limit_per_s: float = Field(
        default=2_000, ge=0, description="per API key: sustained requests per second (a token bucket); 0 turns it off"
    )
    rate_limit_burst: float = Field(default=4_000, ge=1, description="per API key: the burst a client may use at once")
    key_refresh_s: float = Field(default=5.0, gt=0, description="how soon a new or revoked API key takes effect")
    trusted_proxies: list[str] = Field(
        default=[],
        validation_alias="NPS_TRUSTED_PROXIES",
        description="addresses (or CIDR ranges) of the proxies whose X-Forwarded-For names the client (JSON list); "
        "none by default: the client is the peer that connected (publishable keys' limits are per client address)",
    )
    head_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a connection whose request line and headers are not all in within this many "
        "seconds is closed (slow clients)",
    )
    body_timeout_s: float = Field(
        default=10.0, gt=0, description="a request body not all received within this many seconds gets 408"
    )
    # A database that hangs (a partition, a server stuck on I/O or a lock, a failover) answers
    # nothing rather than an error: without a deadline every request waits as long as it does.
    db_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="a request that uses the database is answered within this many seconds: with its result, or "
        "with 503 and Retry-After (its connections closed, its transaction rolled back); also the wait for a "
        "pooled or new connection, and the readiness probe's",
    )

    # Consumer group timings. Apache Kafka's floor for the session timeout is 6 s
    # (group.min.session.timeout.ms); the local broker accepts less, and the tests use less
    # so a restarted consumer rejoins in about 4 s instead of about 18 s.
    consumer_session_timeout_ms: int = Field(
        default=10_000,
        validation_alias="NPS_CONSUMER_SESSION_TIMEOUT_MS",
        description="consumer-group session timeout (Apache Kafka's minimum is 6000)",
    )
    consumer_heartbeat_ms: int = Field(
        default=3_000, validation_alias="NPS_CONSUMER_HEARTBEAT_MS", description="consumer-group heartbeat interval"
    )
    # Static membership (KIP-345): a consumer restarted with the same instance id takes its place
    # back without waiting for the session to time out. Measured on the local broker, a SIGKILLed
    # consumer's replacement consumed again after 18.3 s without one, 8.1 s with one.
    consumer_instance_id: str | None = Field(
        default=None,
        description="the consumer's static group member id (one per replica, stable across restarts: the pod name "
        "in a StatefulSet); `nps up` sets `<service>-<host>`. A static member does not leave the group on shutdown",
    )
    consumer_rebalance_timeout_ms: int = Field(
        default=10_000,
        validation_alias="NPS_CONSUMER_REBALANCE_TIMEOUT_MS",
        description="how long a rebalance waits for members to rejoin",
    )
    # One transaction per batch: 10,000 events is ~0.5 s of scoring work, short enough that a
    # SIGTERM drains quickly, long enough to amortise the round trips (make bench: 5,000 gave
    # ~19,500 events/s, 10,000 ~23,000).
    consumer_max_batch: int = Field(
        default=10_000,
        ge=1,
        validation_alias="NPS_CONSUMER_MAX_BATCH",
        description="messages per batch at most, one database transaction each (follow-up: one per shard, "
        "`NPS_FOLLOWUP_SHARDS`); what arrives while a batch is in its transaction joins the next, up to this",
    )
    consumer_stuck_after_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias="NPS_CONSUMER_STUCK_AFTER_S",
        description="a consumer retrying one step (database or broker away) for longer reports not ready",
    )
    # A batch is ~0.5 s of database work at 10,000 events (make bench); past this the database is
    # taken to hang: the transaction is abandoned (its connection closed, so it rolls back) and the
    # batch retried from its offsets.
    consumer_batch_timeout_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="NPS_CONSUMER_BATCH_TIMEOUT_S",
        description="a batch's (or a periodic step's) transaction still running after this many seconds is "
        "abandoned and retried",
    )
    consumer_poll_ms: int = Field(
        default=200, ge=1, validation_alias="NPS_CONSUMER_POLL_MS", description="longest wait for a batch"
    )
    # A bug that makes every message undecodable must stop the loop, not divert the whole
    # topic into the dead-letter queue: past this many in a row, the loop fails loudly.
    deadletter_max_consecutive: int = Field(
        default=1_000,
        ge=1,
        validation_alias="NPS_DEADLETTER_MAX_CONSECUTIVE",
        description="past this many undecodable messages in a row, a consumer stops instead of dead-lettering the topic",
    )


def async_url(url: str) -> str:
    """Accept the usual postgres:// and postgresql:// forms and pick the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")
