"""`nps`: run the whole loop (`nps up`), or one piece of it.

nps up          embedded PostgreSQL + broker (unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS
                are set), topics, migrations, then the six services, restarted if they die
nps migrate     alembic upgrade head for every service's schema
nps topics      create the versioned topics that do not exist yet
nps status      each service's readiness, consumer lag per group, outbox rows waiting,
                webhook deliveries pending, alerts firing, active tickets (exit 1: not all ready)
nps probe [SERVICE]
                exit 0 if the service's /healthz answers on this host (the image's
                HEALTHCHECK: without a name, the service PID 1 runs)
nps keys create NAME --scope ... | list | revoke NAME
                API keys and their scopes, for every service's API
nps audit       the audit log: keys made and revoked, erasures requested
nps webhooks create --url URL --event TYPE ... | list | show ID | pause ID | resume ID
             | rotate ID | delete ID | test ID | deliveries ID [--status failed] | retry ID DELIVERY
                webhook subscriptions (delivery), like the /v1/webhooks API
nps ingest | scoring | followup | alerts | delivery | themes
                run one service in this process (one service per container)
nps ingest replay [--since TIMESTAMP]
                publish again the accepted events ingest keeps (NPS_INGEST_REPLAY_RETENTION_HOURS)
                since TIMESTAMP, or since its replay watermark: a topic deleted by mistake,
                a retention too short (consumers are idempotent: replaying more is safe)
nps followup policy check FILE | explain [--file FILE] --response JSON | reload
                check a follow-up policy file; say which rule a sample response matches;
                make the running loop's follow-up read its policy file again
nps alerts simulate [--seed N] [--quick] [--write FILE]
                streams with a known truth through the alert rules and state machine: false
                alerts, power, delay, FDR (docs/alerts.md); --write replaces the table in FILE
nps experiments simulate [--seed N] [--quick] [--write FILE]
                people with regression to the mean and a known follow-up effect through the
                experiment estimators: coverage, false decisions read daily, the naive bias
                (docs/experiments.md); --write replaces the table in FILE
nps themes check FILE | evaluate [--taxonomy FILE] [--labelled JSONL]
                check a theme taxonomy; its precision and recall per theme on a labelled set
nps themes suggest [--window 30d] [--segment S] [--category detractor] [--format yaml]
                candidate themes from the comments the taxonomy does not tag, with their
                phrases, counts and examples (redacted); yaml: ready for the taxonomy
nps scoring rebuild [--check | --replay]
                recompute scoring's aggregates from its stored responses; --check only
                compares; --replay reads the responses topic from the start into an empty schema
nps themes rebuild [--check | --replay]
                the same for the theme counts (theme_responses, theme_daily; NPS_THEMES_TAXONOMY)
nps scoring prune [--dry-run]
                delete scoring's counts of days before NPS_SCORING_RETENTION_DAYS
                (docs/scaling.md); the services keep running
nps themes prune [--dry-run]
                the same for the theme counts and kept comments (NPS_THEMES_RETENTION_DAYS)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from delivery_service import arguments as webhooks_arguments
from services.infra import create_topics
from services.launcher import SERVICES, LauncherSettings, sealer_if_set, service_entry, up
from services.tools import (
    NotRunning,
    audit_command,
    create_publishable_key,
    keys_command,
    policy_check,
    policy_explain,
    policy_reload,
    probe,
    prune_counts,
    rebuild_counts,
    replay_ingest,
    rotate_identity,
    rotate_secrets,
    status_command,
    suggest_themes,
    tool_database_url,
    webhooks_command,
)
from shared import logs
from shared.auth import SCOPES
from shared.db import upgrade
from shared.http import serve
from shared.sealed import SecretsKeyMissing, new_key
from shared.settings import PseudonymSecretMissing
from shared.workers import inherited_socket, supervise


def run_service(name: str) -> int:
    from followup_service.routing.policy import PolicyError

    settings_cls, create_app = service_entry(name)
    settings = settings_cls()
    logs.configure(settings.log_level, name, settings.log_format)
    sock = inherited_socket()
    workers = int(getattr(settings, "workers", 1))
    if workers > 1 and sock is None:  # the parent of several processes on one port (shared/workers.py)
        return supervise(name, workers, settings.host, settings.port)
    try:
        app = create_app(settings)
    except PolicyError as exc:  # a bad follow-up policy: say what is wrong, do not start
        for problem in exc.problems:
            print(f"nps {name}: policy: {problem}", file=sys.stderr)
        return 2
    return serve(app, settings.host, settings.port, settings.head_timeout_s, sock, settings.trusted_proxies)


def aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. {text}Z): {text!r} could be any of 24 times")
    return value


Command = Callable[[argparse.Namespace], int]


def needs_the_loop(run: Command) -> Command:
    """A command that works on a running loop's database or topics: NotRunning (nothing to work on,
    and what to do about it) is its message and exit 2."""

    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except NotRunning as exc:
            print(exc, file=sys.stderr)
            return 2

    return command


def with_logs(run: Callable[[argparse.Namespace, LauncherSettings], int]) -> Command:
    """A command run from the launcher's settings, its logs configured as the launcher's."""

    def command(args: argparse.Namespace) -> int:
        settings = LauncherSettings()
        logs.configure(settings.log_level, "nps", settings.log_format)
        return run(args, settings)

    return command


def on_the_database(run: Callable[[argparse.Namespace, str], Coroutine[Any, Any, int]]) -> Command:
    """A command on the loop's database (keys, audit, webhooks), found as `nps up` left it."""

    def command(args: argparse.Namespace, settings: LauncherSettings) -> int:
        try:
            url = tool_database_url(settings)
        except NotRunning as exc:
            print(exc, file=sys.stderr)
            return 2
        return asyncio.run(run(args, url))

    return with_logs(command)


def migrate(args: argparse.Namespace, settings: LauncherSettings) -> int:
    secret = settings.pseudonym_secret.get_secret_value() if settings.pseudonym_secret else None
    upgrade(settings.require_database_url(), pseudonym_secret=secret, sealer=sealer_if_set(settings))
    return 0


def topics(args: argparse.Namespace, settings: LauncherSettings) -> int:
    created = asyncio.run(create_topics(settings))
    print("created: " + (", ".join(created) or "nothing (all exist)"))
    return 0


def add_loop_commands(sub: Any) -> None:
    sub.add_parser("up", help="run the whole loop").set_defaults(func=lambda args: up())
    sub.add_parser("migrate", help="apply every service's migrations").set_defaults(func=with_logs(migrate))
    sub.add_parser("topics", help="create the topics").set_defaults(func=with_logs(topics))
    status = sub.add_parser(
        "status", help="each service's readiness, consumer lag, outbox, deliveries, alerts, tickets"
    )
    status.set_defaults(func=lambda args: status_command())
    probe_parser = sub.add_parser("probe", help="exit 0 if a service's /healthz answers (the image's HEALTHCHECK)")
    probe_parser.add_argument(
        "service", nargs="?", help="default: the service PID 1 runs (in a container: its command)"
    )
    probe_parser.set_defaults(func=lambda args: probe(args.service))


def keys_dispatch(args: argparse.Namespace, url: str) -> Coroutine[Any, Any, int]:
    if getattr(args, "publishable", False):
        return create_publishable_key(url, args)
    if args.action == "rotate-identity":
        return rotate_identity(url, args)
    if args.action == "create" and any(
        (args.origin, args.survey, args.channel, args.native, args.anonymous, args.sample is not None)
    ):
        return refused(
            "nps keys create: --origin, --survey, --channel, --native, --anonymous and --sample need --publishable"
        )
    return keys_command(url, args.action, getattr(args, "name", None), getattr(args, "scope", None))


async def refused(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def add_admin_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage API keys and their scopes")
    keys.set_defaults(func=on_the_database(keys_dispatch))
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name")
    create.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help=f"what the key may do (repeat, or comma-separate; default responses:write): {', '.join(SCOPES)}",
    )
    create.add_argument(
        "--publishable",
        action="store_true",
        help="a key for a web page or an app (nps_pk_…): it may only post a response, record an impression and ask "
        "for the prompt, from its origins; prints the key and the identity secret your server hashes ids with",
    )
    create.add_argument("--origin", action="append", metavar="ORIGIN", help="with --publishable: a page's origin "
                        "(https://app.example.com; repeat)")  # fmt: skip
    create.add_argument("--survey", action="append", metavar="ID", help="with --publishable: the only survey ids "
                        "it may answer (repeat; default: any)")  # fmt: skip
    create.add_argument("--channel", help="with --publishable: the channel set on its responses (e.g. web)")
    create.add_argument("--native", action="store_true", help="with --publishable: also from apps that send no Origin")
    create.add_argument(
        "--anonymous",
        action="store_true",
        help="with --publishable: no identity (a random id the client makes; no follow-up reaches the person)",
    )
    create.add_argument(
        "--sample",
        type=float,
        metavar="SHARE",
        help="with --publishable: GET /v1/prompt shows the prompt to this share of people (0 < SHARE <= 1), the same "
        "people all through a period (default: the survey's NPS_INGEST_PROMPT_SAMPLES share, or everyone)",
    )
    keys_sub.add_parser("revoke", help="revoke a key").add_argument("name")
    rotate = keys_sub.add_parser(
        "rotate-identity", help="a publishable key's new identity secret (printed once); the old one verifies a while"
    )
    rotate.add_argument("name")
    rotate.add_argument("--overlap-s", type=float, default=86_400, help="how long the old secret still verifies")
    keys_sub.add_parser("list", help="list keys: names, scopes, dates, last use (never the keys)")
    webhooks = webhooks_arguments.add_parser(sub)
    webhooks.set_defaults(func=on_the_database(lambda args, url: webhooks_command(url, args)))
    sealed = sub.add_parser("secrets", help="the key that seals stored secrets (NPS_SECRETS_KEY)")
    sealed_actions = sealed.add_subparsers(dest="action", required=True)
    sealed_actions.add_parser("new-key", help="print a new random key (32 bytes, base64url)").set_defaults(
        func=lambda args: print(new_key()) or 0
    )
    sealed_actions.add_parser(
        "rotate",
        help="seal every stored secret again with NPS_SECRETS_KEY (the old key as NPS_SECRETS_KEY_PREVIOUS)",
    ).set_defaults(func=on_the_database(lambda args, url: rotate_secrets(url)))
    audit_parser = sub.add_parser("audit", help="the audit log, newest first: keys made and revoked, erasures")
    audit_parser.add_argument("--limit", type=int, default=50)
    audit_parser.add_argument("--action", help="only this action, e.g. key.created")
    audit_parser.set_defaults(func=on_the_database(lambda args, url: audit_command(url, args.limit, args.action)))


def add_ingest_actions(actions: Any) -> None:
    replay = actions.add_parser("replay", help="publish the logged events again (see `nps --help`)")
    replay.add_argument(
        "--since",
        type=aware_time,
        help="ISO 8601 with a zone (2026-11-26T09:00:00Z); default: the replay watermark less its margin",
    )
    replay.set_defaults(func=needs_the_loop(lambda args: replay_ingest(args.since)))


def policy_command(args: argparse.Namespace) -> int:
    if args.policy_action == "check":
        return policy_check(args.file)
    if args.policy_action == "reload":
        return policy_reload()
    return policy_explain(args.file, args.response)


def add_followup_actions(actions: Any) -> None:
    policy = actions.add_parser("policy", help="check a policy file, explain a decision (see `nps --help`)")
    policy.set_defaults(func=policy_command)
    policy_actions = policy.add_subparsers(dest="policy_action", required=True)
    policy_actions.add_parser("check", help="check a policy file: exit 1 listing every problem").add_argument("file")
    policy_actions.add_parser("reload", help="the running `nps up`'s follow-up reads its policy file again")
    explain = policy_actions.add_parser("explain", help="which rule a sample response matches, and why")
    explain.add_argument("--file", help="the policy file (default: NPS_FOLLOWUP_POLICY, else the default policy)")
    explain.add_argument(
        "--response",
        required=True,
        help='the sample as JSON: {"score": 3, "channel": "web", "attributes": {"plan": "pro"}, '
        '"comment": "...", "previous_score": 9}',
    )


def simulate_alerts(args: argparse.Namespace) -> int:
    from alerts_service import simulate

    return simulate.main(args.seed, args.quick, args.write)


def simulate_experiments(args: argparse.Namespace) -> int:
    from followup_service.experiments import simulate

    return simulate.main(args.seed, args.quick, args.write)


def add_experiments_command(sub: Any) -> None:
    experiments = sub.add_parser("experiments", help="follow-up experiments (docs/experiments.md)")
    actions = experiments.add_subparsers(dest="action", required=True)
    sim = actions.add_parser("simulate", help="the experiment estimators' coverage and errors on simulated people")
    sim.add_argument("--seed", type=int, default=1, help="the same seed prints the same table")
    sim.add_argument("--quick", action="store_true", help="a small run (seconds): a smoke test")
    sim.add_argument("--write", metavar="FILE", help="replace the simulator's table in FILE (docs/experiments.md)")
    sim.set_defaults(func=simulate_experiments)


def add_alerts_actions(actions: Any) -> None:
    sim = actions.add_parser("simulate", help="the alert rules' error rates on simulated streams")
    sim.add_argument("--seed", type=int, default=1, help="the same seed prints the same table")
    sim.add_argument("--quick", action="store_true", help="a small run (seconds): a smoke test")
    sim.add_argument("--write", metavar="FILE", help="replace the simulator's table in FILE (docs/alerts.md)")
    sim.set_defaults(func=simulate_alerts)


def add_rebuild(actions: Any, themes: bool, help: str) -> None:
    rebuild = actions.add_parser("rebuild", help=help)
    how = rebuild.add_mutually_exclusive_group()
    how.add_argument("--check", action="store_true", help="compare with a recompute, change nothing")
    how.add_argument(
        "--replay",
        action="store_true",
        help="replay the responses topic into empty theme tables"
        if themes
        else "replay the responses topic into an empty schema",
    )
    rebuild.set_defaults(
        func=needs_the_loop(lambda args: rebuild_counts(replay_log=args.replay, check_only=args.check, themes=themes))
    )


def taxonomy_command(args: argparse.Namespace) -> int:
    from themes_service import taxonomy as themes

    if args.action == "check":
        return themes.check_command(args.file)
    return themes.evaluate_command(args.taxonomy, args.labelled)


def add_themes_actions(actions: Any) -> None:
    check = actions.add_parser("check", help="check a theme taxonomy: exit 1 listing every problem")
    check.add_argument("file")
    check.set_defaults(func=taxonomy_command)
    suggest = actions.add_parser(
        "suggest", help="candidate themes from the comments the taxonomy does not tag (docs/themes.md)"
    )
    suggest.add_argument("--window", default="30d", help="N days ending on --as-of (default 30d)")
    suggest.add_argument("--segment", default="all", help="all, dimension:value or a:1,b:2 (default all)")
    suggest.add_argument("--category", choices=["promoter", "passive", "detractor"], help="only their comments")
    suggest.add_argument(
        "--as-of", type=date.fromisoformat, help="YYYY-MM-DD, the window's last day (default today, UTC)"
    )
    suggest.add_argument("--taxonomy", help="the taxonomy (default: NPS_THEMES_TAXONOMY, else the shipped one)")
    suggest.add_argument("--top", type=int, default=10, help="at most this many candidates (default 10)")
    suggest.add_argument(
        "--min-count", type=int, help="comments a candidate needs (default 0.5%% of the untagged, at least 5)"
    )
    suggest.add_argument("--format", choices=["table", "yaml"], default="table", help="yaml: paste into the taxonomy")
    suggest.set_defaults(func=needs_the_loop(suggest_themes))
    add_rebuild(actions, themes=True, help="recompute the theme counts (like `nps scoring rebuild`; see `nps --help`)")
    evaluate = actions.add_parser("evaluate", help="precision and recall per theme on a labelled set")
    evaluate.add_argument("--taxonomy", help="the taxonomy file (default: NPS_THEMES_TAXONOMY, else the shipped one)")
    evaluate.add_argument(
        "--labelled", help="JSON lines of {comment, themes} (default: the shipped tests/data/themes_eval.jsonl)"
    )
    evaluate.set_defaults(func=taxonomy_command)
    add_prune(actions, themes=True)


def add_prune(actions: Any, themes: bool) -> None:
    retention = "NPS_THEMES_RETENTION_DAYS" if themes else "NPS_SCORING_RETENTION_DAYS"
    prune = actions.add_parser("prune", help=f"delete counts answered before {retention} (see `nps --help`)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    prune.set_defaults(func=needs_the_loop(lambda args: prune_counts(dry_run=args.dry_run, themes=themes)))


def add_scoring_actions(actions: Any) -> None:
    add_rebuild(actions, themes=False, help="recompute the aggregates (see `nps --help`)")
    add_prune(actions, themes=False)


# Each service's own actions (`nps ingest replay`, ...); without one, `nps NAME` runs the service.
SERVICE_ACTIONS: dict[str, Callable[[Any], None]] = {
    "ingest": add_ingest_actions,
    "followup": add_followup_actions,
    "alerts": add_alerts_actions,
    "themes": add_themes_actions,
    "scoring": add_scoring_actions,
}


def add_service_commands(sub: Any) -> None:
    for name in SERVICES:
        service = sub.add_parser(name, help=f"run the {name} service alone")
        service.set_defaults(func=lambda args, name=name: run_service(name))
        if name in SERVICE_ACTIONS:
            SERVICE_ACTIONS[name](service.add_subparsers(dest="action"))


def parser() -> argparse.ArgumentParser:
    """`nps` and its commands; each command's parser sets `func`, the function that carries it out."""
    nps = argparse.ArgumentParser(prog="nps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = nps.add_subparsers(dest="command", required=True)
    add_loop_commands(sub)
    add_admin_commands(sub)
    add_experiments_command(sub)
    add_service_commands(sub)
    return nps


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    # A bad NPS_* variable, or a secret the command needs and lacks: say which and why, no traceback.
    except (ValidationError, SettingsError, PseudonymSecretMissing, SecretsKeyMissing) as exc:
        if isinstance(exc, ValidationError) and not exc.title.endswith("Settings"):
            raise  # not the environment's settings: a fault to see whole
        print(f"nps {args.command}: bad configuration: {settings_problem(exc)}", file=sys.stderr)
        return 2
    return code


def settings_problem(exc: Exception) -> str:
    """What is wrong with the environment's settings, in one line."""
    if isinstance(exc, SettingsError):  # a list or mapping variable that is not JSON
        return f'{exc} (give it as JSON, e.g. ["a", "b"])'
    if isinstance(exc, ValidationError):
        return "; ".join(f"{variable_of(exc.title, e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)  # a missing secret's message names it


def variable_of(settings_class: str, loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a settings field (NPS_SCORING_CONSUMERS), else the field's name."""
    from services.configdoc import SERVICES as DOCUMENTED
    from services.configdoc import variable

    field = str(loc[0]) if loc else ""
    for cls in [c for _, c in DOCUMENTED] + [LauncherSettings]:
        if cls.__name__ == settings_class and field in cls.model_fields:
            return variable(cls, field, cls.model_fields[field])
    return ".".join(str(p) for p in loc) or "input"


if __name__ == "__main__":
    sys.exit(main())
