"""The `nps` commands an operator runs beside a running loop: keys, the audit log, scoring's
rebuild. With `make run` they find its database and broker from var/, with nothing exported."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import SecretStr

from services.infra import create_api_key
from services.launcher import (
    BOOTSTRAP_FILE,
    DATABASE_URL_FILE,
    PSEUDONYM_SECRET_FILE,
    SECRETS_KEY_FILE,
    LauncherSettings,
)
from shared import audit, logs
from shared.sealed import CannotOpen, Sealer
from shared.settings import async_url

if TYPE_CHECKING:
    from scoring_service.settings import ScoringSettings


class NotRunning(Exception):
    pass


def tool_database_url(settings: LauncherSettings) -> str:
    """DATABASE_URL, else the embedded database of the `nps up` running with this var/ folder."""
    if settings.database_url is not None:
        return settings.require_database_url()
    url_file = settings.var_dir / DATABASE_URL_FILE
    if not url_file.exists():
        raise NotRunning(
            f"DATABASE_URL is not set and no `nps up` is running here ({url_file} is missing): "
            "export DATABASE_URL, or start the loop with `make run` first"
        )
    return async_url(url_file.read_text().strip())


def tool_bootstrap(settings: LauncherSettings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the embedded broker of the `nps up` running here."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    bootstrap_file = settings.var_dir / BOOTSTRAP_FILE
    if not bootstrap_file.exists():
        raise NotRunning(
            f"KAFKA_BOOTSTRAP_SERVERS is not set and no `nps up` is running here ({bootstrap_file} is missing): "
            "export KAFKA_BOOTSTRAP_SERVERS, or start the loop with `make run` first"
        )
    return bootstrap_file.read_text().strip()


def tool_pseudonym_secret(settings: LauncherSettings) -> SecretStr:
    """NPS_PSEUDONYM_SECRET, else the one `nps up` keeps for the embedded database."""
    if settings.pseudonym_secret is not None:
        return settings.pseudonym_secret
    secret_file = settings.var_dir / PSEUDONYM_SECRET_FILE
    if not secret_file.exists():
        raise NotRunning(f"NPS_PSEUDONYM_SECRET is not set and {secret_file} is missing: export it")
    return SecretStr(secret_file.read_text().strip())


def tool_sealer(settings: LauncherSettings) -> Sealer:
    """NPS_SECRETS_KEY (and NPS_SECRETS_KEY_PREVIOUS), else the key `nps up` keeps for the embedded database."""
    if settings.secrets_key is None:
        key_file = settings.var_dir / SECRETS_KEY_FILE
        if not key_file.exists():
            raise NotRunning(f"NPS_SECRETS_KEY is not set and {key_file} is missing: export it")
        settings = settings.model_copy(update={"secrets_key": SecretStr(key_file.read_text().strip())})
    return settings.sealer()


def sealer_for(command: str) -> Sealer | None:
    """`tool_sealer`, or None once `command` has said on stderr why there is none (exit 2)."""
    try:
        return tool_sealer(LauncherSettings())
    except (NotRunning, ValueError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None


def cli_actor() -> str:
    """Who is at the terminal, for the audit log."""
    return f"cli:{getpass.getuser()}"


async def audit_command(url: str, limit: int, action: str | None) -> int:
    from shared import audit
    from shared.db import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            for entry in await audit.entries(conn, limit, action):
                detail = f"\t{json.dumps(entry.detail)}" if entry.detail else ""
                print(f"{entry.at:%Y-%m-%d %H:%M:%S}\t{entry.actor}\t{entry.action}\t{entry.subject}{detail}")
    finally:
        await engine.dispose()
    return 0


async def create_publishable_key(url: str, args: argparse.Namespace) -> int:
    """`nps keys create NAME --publishable --origin …`: prints the key, then its identity secret."""
    from shared.auth import KeyExists, KeyStore, Publishable, parse_origin
    from shared.db import make_engine
    from shared.validation import PLAIN

    try:
        if args.scope:
            raise ValueError("a publishable key has no scopes: it may only post a response, record an impression "
                             "and ask for the prompt")  # fmt: skip
        origins = frozenset(parse_origin(o) for o in args.origin or ())
        if not origins and not args.native:
            raise ValueError("give the --origin of every page that uses the key, or --native for an app's")
        for value in [*(args.survey or ()), *([args.channel] if args.channel else [])]:
            if not re.fullmatch(PLAIN, value) or len(value) > 64:
                raise ValueError(f"{value!r} is not a survey id or channel (1-64 plain characters)")
        if args.sample is not None and not 0 < args.sample <= 1:
            raise ValueError(f"--sample {args.sample} is not a share: 0 < SHARE <= 1 (0.25: a quarter of people)")
        sealer = tool_sealer(LauncherSettings())
    except (ValueError, NotRunning) as exc:
        print(f"nps keys create: {exc}", file=sys.stderr)
        return 2
    bound = Publishable(origins, frozenset(args.survey or ()), args.channel, args.native, args.anonymous, args.sample)
    engine = make_engine(url)
    try:
        key, identity = await KeyStore(engine).create_publishable(args.name, bound, sealer, cli_actor())
    except KeyExists:
        print(f"a key named {args.name!r} exists; revoke it first", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(key)
    where = ", ".join(sorted(origins)) or "native apps"
    if identity is None:
        print(
            f"anonymous publishable key {args.name!r} created for {where}: it goes in your page or app, which makes a "
            "random respondent id (a UUID) per person; no follow-up reaches them. Shown only this once.",
            file=sys.stderr,
        )
        return 0
    print(identity)
    print(
        f"publishable key {args.name!r} created for {where}. The first line goes in your page or app; the second, "
        "the identity secret, stays on your server, which sends respondent_hash = hex HMAC-SHA256(identity "
        "secret, respondent_id) with each response (docs/collect.md). Both are shown only this once.",
        file=sys.stderr,
    )
    return 0


async def rotate_identity(url: str, args: argparse.Namespace) -> int:
    """`nps keys rotate-identity NAME`: prints the new identity secret; the old one verifies beside it
    for --overlap-s while the app's servers switch."""
    from shared.auth import KeyStore, identity_place, new_identity_secret
    from shared.db import make_engine

    if args.overlap_s < 0:
        print("nps keys rotate-identity: --overlap-s cannot be negative", file=sys.stderr)
        return 2
    sealer = sealer_for("nps keys rotate-identity")
    if sealer is None:
        return 2
    identity = new_identity_secret()
    engine = make_engine(url)
    try:
        sealed = sealer.seal(identity, identity_place(args.name))
        rotated = await KeyStore(engine).rotate_identity(args.name, sealed, args.overlap_s, cli_actor())
    finally:
        await engine.dispose()
    if not rotated:
        print(f"no active publishable key named {args.name!r} with an identity secret", file=sys.stderr)
        return 1
    print(identity)
    print(
        f"the old identity secret of {args.name!r} verifies too for {args.overlap_s:g} s: give the new one to your "
        "servers meanwhile. Shown only this once.",
        file=sys.stderr,
    )
    return 0


async def keys_command(url: str, action: str, name: str | None, scopes: list[str] | None = None) -> int:
    from shared.auth import KeyExists, KeyStore, parse_scopes
    from shared.db import make_engine

    if action == "create":
        assert name is not None
        try:
            granted = parse_scopes([s for text in scopes or ["responses:write"] for s in text.split(",") if s])
        except ValueError as exc:
            print(f"nps keys create: {exc}", file=sys.stderr)
            return 2
        try:
            print(await create_api_key(url, name, granted, actor=cli_actor()))
        except KeyExists:
            print(f"a key named {name!r} exists; revoke it first", file=sys.stderr)
            return 1
        print(
            f"key {name!r} created with {', '.join(granted)}; it is shown only this once (only its hash is stored)",
            file=sys.stderr,
        )
        return 0
    engine = make_engine(url)
    try:
        keys = KeyStore(engine)
        if action == "revoke":
            assert name is not None
            if not await keys.revoke(name, actor=cli_actor()):
                print(f"no active key named {name!r}", file=sys.stderr)
                return 1
            print(f"key {name!r} revoked (every service refuses it within its KEY_REFRESH_S, 5 s)", file=sys.stderr)
        else:
            for key in await keys.list():
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                used = f"last used {key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never used"
                print(f"{key.name}\t{','.join(key.scopes)}\tcreated {key.created_at:%Y-%m-%d %H:%M}\t{used}\t{state}")
    finally:
        await engine.dispose()
    return 0


async def webhooks_command(url: str, args: argparse.Namespace) -> int:
    from delivery_service.cli import run
    from shared.db import make_engine

    sealer = sealer_for("nps webhooks")
    if sealer is None:
        return 2
    engine = make_engine(url)
    try:
        return await run(engine, args, cli_actor(), sealer)
    finally:
        await engine.dispose()


async def rotate_secrets(url: str) -> int:
    """`nps secrets rotate`: every sealed secret sealed again with NPS_SECRETS_KEY (what the previous
    key sealed opens with NPS_SECRETS_KEY_PREVIOUS), in one transaction."""
    from delivery_service import repository
    from shared.auth import KeyStore, identity_place
    from shared.db import make_engine

    sealer = sealer_for("nps secrets rotate")
    if sealer is None:
        return 2
    engine = make_engine(url)
    resealed = {"webhook subscription(s)": 0, "publishable key(s)": 0}
    try:
        async with engine.begin() as conn:
            stores = (
                ("webhook subscription(s)", repository.sealed_secrets, repository.place, repository.reseal),
                ("publishable key(s)", KeyStore.sealed_identities, identity_place, KeyStore.reseal_identity),
            )
            for label, sealed_rows, place_of, reseal in stores:
                for owner, secret, previous in await sealed_rows(conn):
                    if sealer.is_current(secret) and (previous is None or sealer.is_current(previous)):
                        continue
                    place = place_of(owner)
                    fresh = sealer.seal(sealer.open(secret, place), place)
                    fresh_previous = None if previous is None else sealer.seal(sealer.open(previous, place), place)
                    await reseal(conn, owner, fresh, fresh_previous)
                    resealed[label] += 1
            await audit.record(conn, cli_actor(), "secrets.rotated", sealer.current_id, dict(resealed))
    except CannotOpen as exc:
        print(f"nps secrets rotate: nothing changed: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    counts = ", ".join(f"{n} {label}" for label, n in resealed.items())
    print(f"{counts} sealed again with key {sealer.current_id}; NPS_SECRETS_KEY_PREVIOUS may go")
    return 0


def replay_ingest(since: datetime | None) -> int:
    from ingest_service.replay import run_replay
    from ingest_service.settings import IngestSettings

    launcher = LauncherSettings()
    logs.configure(launcher.log_level, "ingest-replay", launcher.log_format)
    settings = IngestSettings(
        database_url=SecretStr(tool_database_url(launcher)), kafka_bootstrap_servers=tool_bootstrap(launcher)
    )
    count = asyncio.run(run_replay(settings, since if since is not None else "watermark"))
    print(f"replayed {count:,} events to {settings.topics.responses}")
    return 0


def counting_settings(themes: bool, **values: Any) -> ScoringSettings:
    """Scoring's settings, or themes' (NPS_THEMES_*), for a tool working on one service's counts."""
    from scoring_service.settings import ScoringSettings
    from themes_service.settings import ThemesSettings

    cls = ThemesSettings if themes else ScoringSettings
    return cls(**values)


def rebuild_counts(*, replay_log: bool, check_only: bool, themes: bool = False) -> int:
    """`nps scoring rebuild`, or `nps themes rebuild` (the theme counts, with NPS_THEMES_TAXONOMY)."""
    from scoring_service import rebuild
    from scoring_service.handlers import SCORING, Counting

    launcher = LauncherSettings()
    logs.configure(launcher.log_level, "themes-rebuild" if themes else "scoring-rebuild", launcher.log_format)
    values: dict[str, Any] = {
        "database_url": SecretStr(tool_database_url(launcher)),
        "pseudonym_secret": tool_pseudonym_secret(launcher),
    }
    if replay_log:
        values["kafka_bootstrap_servers"] = tool_bootstrap(launcher)
    settings = counting_settings(themes, **values)
    counting: Counting = SCORING
    if themes:
        from themes_service.handlers import ThemeCounts
        from themes_service.taxonomy import ThemesError, load_taxonomy

        try:
            counting = ThemeCounts(load_taxonomy(getattr(settings, "taxonomy", None)))
        except ThemesError as exc:
            print(exc, file=sys.stderr)
            return 2
    return asyncio.run(rebuild.run(settings, replay_log=replay_log, check_only=check_only, counting=counting))


def prune_counts(*, dry_run: bool, themes: bool = False) -> int:
    """`nps scoring prune`, or `nps themes prune` (the theme counts and kept comments)."""
    from pydantic import ValidationError

    from scoring_service import prune
    from scoring_service.repository import SCORES
    from themes_service.repository import THEMES

    name = "themes" if themes else "scoring"
    launcher = LauncherSettings()
    logs.configure(launcher.log_level, f"{name}-prune", launcher.log_format)
    try:
        settings = counting_settings(
            themes,
            database_url=SecretStr(tool_database_url(launcher)),
            pseudonym_secret=tool_pseudonym_secret(launcher),
        )
    except ValidationError as exc:
        print(f"nps {name} prune: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(prune.run(settings, dry_run=dry_run, stores=((name, THEMES if themes else SCORES),)))
    except prune.RetentionNotSet as exc:
        print(f"nps {name} prune: {exc}", file=sys.stderr)
        return 2
    return 0


def policy_check(file: str) -> int:
    from followup_service.routing import policy

    try:
        checked = policy.load(Path(file))
    except policy.PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{file}: version {checked.version}, {len(checked.rules)} rules, no problems")
    return 0


def policy_explain(file: str | None, sample: str) -> int:
    from pydantic import ValidationError

    from followup_service.routing import policy
    from followup_service.routing.api import SampleResponse, answer_for
    from followup_service.settings import FollowUpSettings

    try:
        loaded = policy.load(Path(file) if file else FollowUpSettings().policy or policy.DEFAULT_POLICY)
        answer = answer_for(loaded, SampleResponse.model_validate_json(sample))
    except policy.PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"--response: {exc.errors(include_url=False, include_input=False)}", file=sys.stderr)
        return 2
    print(answer.model_dump_json(indent=2))
    return 0


def policy_reload() -> int:
    """SIGHUP to the `nps up` running with this var/ folder, which passes it on to follow-up."""
    from services.launcher import PID_FILE, process_alive

    settings = LauncherSettings()
    pid_file = settings.var_dir / PID_FILE
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    if not text.isdigit() or not process_alive(int(text)):
        print(
            f"no `nps up` is running with {settings.var_dir}; where follow-up runs alone, send it SIGHUP "
            "(kill -HUP <pid of nps followup>)",
            file=sys.stderr,
        )
        return 2
    os.kill(int(text), signal.SIGHUP)
    print(f"asked the running loop (pid {text}) to reload follow-up's policy; follow-up's log says whether it took")
    return 0


def suggest_themes(args: argparse.Namespace) -> int:
    from scoring_service.settings import ScoringSettings
    from themes_service import suggest

    launcher = LauncherSettings()
    logs.configure(launcher.log_level, "themes-suggest", launcher.log_format)
    request = suggest.Request(
        window=args.window, segment=args.segment, category=args.category, as_of=args.as_of,
        taxonomy=args.taxonomy, top=args.top, min_count=args.min_count, output=args.format,
    )  # fmt: skip
    url = tool_database_url(launcher)
    dimensions = ScoringSettings(database_url=SecretStr(url)).segment_dimensions
    return asyncio.run(suggest.run(url, request, dimensions))


def probe(name: str | None, cmdline: Path = Path("/proc/1/cmdline")) -> int:
    """`nps probe [SERVICE]`, the image's HEALTHCHECK: 0 when the service's /healthz answers 200 on
    this host. Without a name, the service is the one PID 1 runs (`nps <service>`, the container's
    command), so one HEALTHCHECK line serves every service of the image."""
    import urllib.error
    import urllib.request

    from services.launcher import SERVICES, local_url, service_entry

    if name is None:
        try:
            args = [a.decode(errors="replace") for a in cmdline.read_bytes().split(b"\0")]
        except OSError as exc:
            print(f"nps probe: cannot read {cmdline}: {exc.strerror}; name the service", file=sys.stderr)
            return 2
        name = next((a for a in args if a in SERVICES), None)
        if name is None:
            print(f"nps probe: PID 1 runs no service ({' '.join(args).strip()!r}); name one", file=sys.stderr)
            return 2
    if name not in SERVICES:
        print(f"nps probe: unknown service {name!r}: {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    url = f"{local_url(service_entry(name)[0]())}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as reply:
            healthy = reply.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"nps probe: {name} at {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


def status_command() -> int:
    """`nps status` (services/status.py), for the loop `nps up` runs here or the one the
    environment names (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, NPS_<SERVICE>_HOST/PORT)."""
    from services import status
    from services.launcher import SERVICES, service_entry

    launcher = LauncherSettings()
    services = {name: service_entry(name)[0]() for name in SERVICES}
    topics = launcher.topics
    groups = [
        status.Group(name, str(cast(Any, services[name]).group_id), reads)
        for name, reads in (
            ("scoring", (topics.responses,)),
            ("themes", (topics.responses,)),
            ("followup", (topics.responses,)),
            ("alerts", (topics.scores,)),
            ("delivery", (topics.followups, topics.tickets, topics.alerts, topics.responses)),
        )
    ]
    rates = str(cast(Any, services["scoring"]).rates_group)
    groups.insert(1, status.Group("rates", rates, (topics.invitations, topics.responses)))
    try:
        url: str | None = tool_database_url(launcher)
    except NotRunning:
        url = None
    try:
        bootstrap: str | None = tool_bootstrap(launcher)
    except NotRunning:
        bootstrap = None
    report = status.run(services, groups, url, bootstrap)
    print("\n".join(report.lines).lstrip("\n"))
    return 0 if report.healthy else 1
