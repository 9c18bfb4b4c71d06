"""`nps up`: the whole loop in one process tree. Embedded PostgreSQL and broker (unless
DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set), topics, migrations, the development key, then the
six services, supervised, and stopped in order."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from pydantic import Field, SecretStr

from services.demo import DemoPage, ensure_demo_key
from services.infra import create_api_key, create_topics, wait_ready
from shared import logs
from shared.auth import Scope
from shared.db import upgrade
from shared.sealed import Sealer, new_key
from shared.settings import InfraSettings, ServiceSettings

if TYPE_CHECKING:
    from ingest_service.settings import IngestSettings
    from services.embedded import EmbeddedBroker, EmbeddedPostgres
    from services.supervisor import Supervisor

log = logging.getLogger("nps")


class LauncherSettings(InfraSettings):
    var_dir: Path = Field(
        default=Path("var"),
        validation_alias="NPS_VAR_DIR",
        description="where `nps up` keeps the embedded PostgreSQL's data, the broker's log and the dev key",
    )
    broker_port: int = Field(
        default=9092, validation_alias="NPS_BROKER_PORT", description="port of the embedded broker (127.0.0.1)"
    )
    demo_port: int = Field(
        default=8010,
        ge=0,
        le=65535,
        validation_alias="NPS_DEMO_PORT",
        description="port of the demo page `nps up` serves with the embedded database (127.0.0.1; 0: none): the web "
        "widget on another origin than the API (docs/widget.md)",
    )


ServiceEntry = tuple[Callable[[], ServiceSettings], Callable[[ServiceSettings], FastAPI]]

# module path of each service: its settings class and its app factory, imported only when used,
# so `nps scoring` does not import the other three services.
SERVICE_MODULES = {
    "ingest": ("ingest_service", "IngestSettings"),
    "scoring": ("scoring_service", "ScoringSettings"),
    "followup": ("followup_service", "FollowUpSettings"),
    "alerts": ("alerts_service", "AlertSettings"),
    "delivery": ("delivery_service", "DeliverySettings"),
    # comments tagged with themes, counted by scoring's rule (its own process: tagging never slows scoring)
    "themes": ("themes_service", "ThemesSettings"),
}


def service_entry(name: str) -> ServiceEntry:
    package, settings_class = SERVICE_MODULES[name]
    settings_module = importlib.import_module(f"{package}.settings")
    bootstrap = importlib.import_module(f"{package}.bootstrap")
    return getattr(settings_module, settings_class), bootstrap.create_app


SERVICES = tuple(SERVICE_MODULES)


# Written by `nps up` while it runs the embedded parts, for `nps keys` and `nps scoring rebuild`
# in another terminal; removed when it stops.
DATABASE_URL_FILE = "database-url"
BOOTSTRAP_FILE = "kafka-bootstrap"
# Kept across runs, like the embedded database it belongs to: the keys in it were made with it.
PSEUDONYM_SECRET_FILE = "pseudonym-secret"
SECRETS_KEY_FILE = "secrets-key"  # NPS_SECRETS_KEY of the embedded database: what it seals opens only with it


def ensure_local_secret(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    """A secret `nps up` keeps for the embedded database (var/pseudonym-secret, var/secrets-key): the
    one there, else a new one (`make`), readable by its owner only."""
    if path.exists():
        return path.read_text().strip()
    secret = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def ensure_key(url: str, path: Path, name: str = "dev", scopes: Sequence[Scope] = ("admin",)) -> str:
    """A key `nps up` keeps in the var directory: the development key `make run` prints
    (var/dev-api-key, admin, embedded database only), or a service's key for another's API
    (var/alerts-themes-key: alerts asks themes for drivers). The one already there while it is still
    active with those scopes, else a fresh one (the old one revoked)."""
    from shared.auth import KeyStore, hash_api_key
    from shared.db import make_engine

    known = path.read_text().strip() if path.exists() else None

    async def ensure() -> str:
        engine = make_engine(url)
        try:
            keys = KeyStore(engine)
            active = await keys.active()
            if known and hash_api_key(known) in active and all(active[hash_api_key(known)].allows(s) for s in scopes):
                return known
            await keys.revoke(name, actor="nps up")
        finally:
            await engine.dispose()
        return await create_api_key(url, name, scopes, actor="nps up")

    key = asyncio.run(ensure())
    if key != known:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
    return key


def local_url(settings: ServiceSettings) -> str:
    """Where a service answers on this host: its bind address, or loopback when it binds every address."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def service_links(settings: LauncherSettings, var_dir: Path) -> dict[str, dict[str, str]]:
    """The environment one service needs to call another's API, per service: alerts asks themes for
    a fired drop alert's drivers, with a key of scope scores:read. What the environment already says wins."""
    if "NPS_ALERTS_THEMES_URL" in os.environ:
        return {}
    themes = local_url(service_entry("themes")[0]())
    key = ensure_key(settings.require_database_url(), var_dir / "alerts-themes-key", "alerts-themes", ("scores:read",))
    return {"alerts": {"NPS_ALERTS_THEMES_URL": themes, "NPS_ALERTS_THEMES_API_KEY": key}}


def ingest_settings(settings: InfraSettings) -> IngestSettings:
    from ingest_service.settings import IngestSettings

    return IngestSettings(
        database_url=settings.database_url,
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
        topic_namespace=settings.topic_namespace,
    )


def replay_since(settings: InfraSettings) -> datetime | None:
    """Where a replay into a new embedded broker starts: ingest's replay watermark less its margin."""
    from ingest_service.replay import replay_start
    from shared.db import make_engine

    ingest = ingest_settings(settings)

    async def read() -> datetime | None:
        engine = make_engine(ingest.require_database_url())
        try:
            return await replay_start(engine, ingest.replay_margin)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def replay_into_new_broker(settings: InfraSettings, since: datetime | None) -> int:
    """The embedded broker keeps topics in memory: a new one has none of the events the consumers
    had not read yet. Ingest's event log has them; publish again what was accepted since `since`."""
    from ingest_service.replay import run_replay

    count = asyncio.run(run_replay(ingest_settings(settings), since))
    log.info(
        "replayed %d accepted events (since %s) into the new broker from ingest's event log",
        count,
        since.isoformat() if since else "the oldest kept",
    )
    return count


def restart_broker(broker: EmbeddedBroker, settings: InfraSettings) -> None:
    """The broker again, on the same port, and its topics. Its storage is memory: what it held is
    gone; what the consumers may not have read yet is published again from ingest's event log (the
    watermark is read first, so nothing the new broker sees can move it past what was lost)."""
    since = replay_since(settings)
    if not broker.running():  # a retry after a failed replay finds it started
        broker.start()
    asyncio.run(create_topics(settings))
    log.error("the embedded broker restarted EMPTY (memory storage); replaying what the consumers may not have read")
    replay_into_new_broker(settings, since)


def prepare(settings: InfraSettings) -> None:
    created = asyncio.run(create_topics(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    secret = settings.pseudonym_secret.get_secret_value() if settings.pseudonym_secret else None
    upgrade(settings.require_database_url(), pseudonym_secret=secret, sealer=sealer_if_set(settings))


def sealer_if_set(settings: InfraSettings) -> Sealer | None:
    """For the migrations: the sealer when NPS_SECRETS_KEY is set (one that must seal refuses without)."""
    return settings.sealer() if settings.secrets_key is not None else None


class StopRequested(Exception):
    pass


@dataclass
class Embedded:
    """The embedded PostgreSQL and broker `nps up` started (None: the settings named real ones), and
    the environment the services get from them."""

    var_dir: Path
    pg: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    overrides: dict[str, str] = field(default_factory=dict)

    def start(self, settings: LauncherSettings, checkpoint: Callable[[], None]) -> None:
        from services.embedded import EmbeddedBroker, EmbeddedPostgres

        if settings.database_url is None:
            self.pg = EmbeddedPostgres(self.var_dir / "pg")
            self.overrides["DATABASE_URL"] = self.pg.start()
            log.info("embedded PostgreSQL: data in %s", self.pg.data_dir)
            # For `nps keys` (and friends) in another terminal while the loop runs.
            url_file = self.var_dir / DATABASE_URL_FILE
            url_file.write_text(self.overrides["DATABASE_URL"] + "\n")
            url_file.chmod(0o600)
        checkpoint()
        if not settings.kafka_bootstrap_servers:
            self.broker = EmbeddedBroker(settings.broker_port, self.var_dir / "log" / "broker.log")
            self.overrides["KAFKA_BOOTSTRAP_SERVERS"] = self.broker.start()
            log.info("embedded broker (tansu, memory storage) on %s", self.broker.bootstrap)
            (self.var_dir / BOOTSTRAP_FILE).write_text(self.broker.bootstrap + "\n")
        checkpoint()
        if self.pg is not None and "NPS_DELIVERY_ALLOW_PRIVATE_URLS" not in os.environ:
            # A laptop: webhooks may go to a receiver on this machine (http://localhost:...).
            self.overrides["NPS_DELIVERY_ALLOW_PRIVATE_URLS"] = "true"

    def effective(self, settings: LauncherSettings) -> LauncherSettings:
        """The settings with the embedded parts' addresses (and the local pseudonym secret) in them."""
        overrides = self.overrides
        return settings.model_copy(
            update={
                "database_url": SecretStr(overrides["DATABASE_URL"]) if self.pg else settings.database_url,
                "kafka_bootstrap_servers": overrides.get("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                "pseudonym_secret": SecretStr(overrides["NPS_PSEUDONYM_SECRET"])
                if "NPS_PSEUDONYM_SECRET" in overrides
                else settings.pseudonym_secret,
                "secrets_key": SecretStr(overrides["NPS_SECRETS_KEY"])
                if "NPS_SECRETS_KEY" in overrides
                else settings.secrets_key,
            }
        )

    def watched_by(self, supervisor: Supervisor, effective: LauncherSettings) -> None:
        """The supervisor restarts an embedded part that dies, as it restarts a service."""
        from services.supervisor import Dependency

        pg, broker = self.pg, self.broker
        if pg is not None:
            supervisor.dependencies.append(Dependency("the embedded PostgreSQL", pg.running, pg.restart))
        if broker is not None:
            supervisor.dependencies.append(
                Dependency("the embedded broker", broker.running, lambda: restart_broker(broker, effective))
            )

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            (self.var_dir / BOOTSTRAP_FILE).unlink(missing_ok=True)
        if self.pg is not None:
            self.pg.stop()
            (self.var_dir / DATABASE_URL_FILE).unlink(missing_ok=True)


def add_services(supervisor: Supervisor, env: dict[str, str], links: dict[str, dict[str, str]]) -> dict[str, str]:
    """Every service as the supervisor's child; returns where each will listen."""
    from services.supervisor import Child, child_env, python_argv

    urls = {}
    for name in SERVICES:
        service_settings = service_entry(name)[0]()
        # One replica of each service: a stable static member id lets a restarted one rejoin at once.
        member_key = f"NPS_{name.upper()}_CONSUMER_INSTANCE_ID"
        member = {member_key: os.environ.get(member_key, f"{name}-{socket.gethostname()}")}
        supervisor.children.append(Child(name, python_argv(name), child_env({**member, **env, **links.get(name, {})})))
        urls[name] = local_url(service_settings)
    return urls


def demo_key_for(settings: LauncherSettings, effective: LauncherSettings, overrides: dict[str, str]) -> tuple[str, str]:
    """The demo page's publishable key and identity secret (services/demo.py), for its own origin."""
    secrets_key = (
        settings.secrets_key.get_secret_value() if settings.secrets_key is not None else overrides["NPS_SECRETS_KEY"]
    )
    origin = f"http://127.0.0.1:{settings.demo_port}"
    return ensure_demo_key(effective.require_database_url(), settings.var_dir, origin, secrets_key)


def print_banner(
    urls: dict[str, str],
    not_ready: Collection[str],
    effective: LauncherSettings,
    embedded: Embedded,
    dev_key: str | None,
    demo: str | None = None,
) -> None:
    print("\nThe NPS feedback loop is running:", flush=True)
    for name, url in urls.items():
        state = "NOT READY" if name in not_ready else "ready"
        print(f"  {name:<9} {url}   ({state}; {url}/docs, {url}/metrics)", flush=True)
    print(f"  broker    {effective.require_bootstrap()}", flush=True)
    pg = embedded.pg
    print(f"  database  {'embedded, data in ' + str(pg.data_dir) if pg else 'DATABASE_URL'}", flush=True)
    if dev_key:
        print(f"  API key   {dev_key}   (also in {embedded.var_dir / 'dev-api-key'})", flush=True)
    if demo:
        print(f"  demo page {demo}/   (the web widget on another origin: answer it, then GET /v1/nps)", flush=True)
    print("Ctrl-C stops everything.\n", flush=True)


def up() -> int:
    from services.supervisor import Supervisor

    settings = LauncherSettings()
    logs.configure(settings.log_level, "launcher", settings.log_format)
    if settings.pseudonym_secret is None and settings.database_url is not None:
        # A database of its own needs the secret its keys were made with: never a new one here.
        print("nps up: NPS_PSEUDONYM_SECRET is not set (it is required with DATABASE_URL)", file=sys.stderr)
        return 2
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    running = claim_var_dir(settings.var_dir)
    if running is not None:
        print(
            f"nps up: another `nps up` (pid {running}) is running with {settings.var_dir}; stop it first",
            file=sys.stderr,
        )
        return 2
    supervisor = Supervisor([])
    # First: a Ctrl-C during startup must still shut down in order. SIGHUP reloads follow-up's policy.
    supervisor.handle_signals(forward={signal.SIGHUP: "followup"})

    def checkpoint() -> None:
        if supervisor.stopping:
            raise StopRequested

    embedded = Embedded(settings.var_dir)
    demo: DemoPage | None = None
    if settings.pseudonym_secret is None:
        secret = ensure_local_secret(settings.var_dir / PSEUDONYM_SECRET_FILE)
        embedded.overrides["NPS_PSEUDONYM_SECRET"] = secret
    if settings.secrets_key is None:
        if settings.database_url is not None:
            print("nps up: NPS_SECRETS_KEY is not set (it is required with DATABASE_URL)", file=sys.stderr)
            return 2
        embedded.overrides["NPS_SECRETS_KEY"] = ensure_local_secret(settings.var_dir / SECRETS_KEY_FILE, new_key)
    try:
        embedded.start(settings, checkpoint)
        effective = embedded.effective(settings)
        prepare(effective)
        if embedded.broker is not None:  # new, so empty: what the consumers had not read went with the last one
            replay_into_new_broker(effective, replay_since(effective))
        dev_key = (
            ensure_key(effective.require_database_url(), settings.var_dir / "dev-api-key") if embedded.pg else None
        )
        # Before the services start, so ingest knows the demo page's key (and origin) from the first request.
        demo_key = demo_key_for(settings, effective, embedded.overrides) if embedded.pg and settings.demo_port else None
        links = service_links(effective, settings.var_dir)
        checkpoint()
        urls = add_services(supervisor, embedded.overrides, links)
        embedded.watched_by(supervisor, effective)
        supervisor.start_all()
        not_ready = wait_ready(urls, give_up=lambda: supervisor.stopping)
        checkpoint()
        if demo_key is not None:
            try:
                demo = DemoPage("127.0.0.1", settings.demo_port, urls["ingest"], *demo_key)
                demo.start()
            except OSError as exc:  # the port is taken: the loop runs without its demo page
                log.warning("no demo page on port %d (%s); set NPS_DEMO_PORT", settings.demo_port, exc)
        print_banner(urls, not_ready, effective, embedded, dev_key, demo.url if demo else None)
        supervisor.watch()
    except StopRequested:
        log.info("stop requested during startup")
    finally:
        if demo is not None:
            demo.stop()
        supervisor.stop_all()
        embedded.stop()
        (settings.var_dir / PID_FILE).unlink(missing_ok=True)
    return 0


PID_FILE = "launcher.pid"


def claim_var_dir(var_dir: Path) -> int | None:
    """Make this process the launcher of `var_dir`: the pid of a live one that already is, else None
    (this one is, now). What a launcher that died left behind (SIGKILL: no clean-up ran) is cleared:
    its address files; its services and broker died with it (PR_SET_PDEATHSIG), and its embedded
    PostgreSQL, still running, is taken over as it is."""
    pid_file = var_dir / PID_FILE
    if pid_file.exists():
        text = pid_file.read_text().strip()
        previous = int(text) if text.isdigit() else None
        if previous is not None and previous != os.getpid() and process_alive(previous):
            return previous
        log.warning("a previous `nps up` (pid %s) ended without stopping; clearing what it left", text or "?")
        for stale in (DATABASE_URL_FILE, BOOTSTRAP_FILE):
            (var_dir / stale).unlink(missing_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")  # a reused pid is not a launcher
    return not cmdline.exists() or b"up" in cmdline.read_bytes().split(b"\0")
