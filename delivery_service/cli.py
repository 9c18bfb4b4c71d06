"""`nps webhooks ...`: the webhooks API's operations from a terminal, straight on the database (like
`nps keys`), with the same validation, the same audit entries and the same signed test."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_service import repository, subscriptions
from delivery_service.domain import host_of, webhook_id
from delivery_service.settings import DeliverySettings
from delivery_service.subscriptions import NewSubscription, NotFound, NotRetryable, SubscriptionPatch, UrlRefused
from shared.sealed import Sealer


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())


async def run(engine: AsyncEngine, args: argparse.Namespace, actor: str, sealer: Sealer) -> int:
    settings = DeliverySettings()
    allow_private = settings.allow_private_urls
    try:
        return await _run(engine, args, actor, allow_private, settings, sealer)
    except ValidationError as exc:
        print(f"nps webhooks {args.action}: {_problems(exc)}", file=sys.stderr)
    except UrlRefused as exc:
        print(f"nps webhooks {args.action}: the URL cannot receive webhooks: {exc}", file=sys.stderr)
    except NotFound as exc:
        print(f"nps webhooks {args.action}: no such subscription or delivery: {exc}", file=sys.stderr)
        return 1
    except NotRetryable as exc:
        print(f"nps webhooks retry: {exc}", file=sys.stderr)
        return 1
    return 2


async def _run(
    engine: AsyncEngine,
    args: argparse.Namespace,
    actor: str,
    allow_private: bool,
    settings: DeliverySettings,
    sealer: Sealer,
) -> int:
    action = args.action
    if action == "create":
        body = NewSubscription.model_validate(
            {
                "url": args.url,
                "events": args.event,
                "filters": {"kinds": args.kind, "segments": args.segment},
                "format": args.format,
                "description": args.description,
            }
        )
        created = await subscriptions.create(engine, sealer, body, allow_private, actor)
        print(created.subscription_id)
        print(created.secret)
        print("subscribed; the secret above is shown only this once: give it to the endpoint", file=sys.stderr)
        return 0
    if action == "list":
        async with engine.connect() as conn:
            found = await repository.subscriptions(conn, 10_000, None)
        for s in found:
            reason = f"\t{s.disabled_reason}" if s.disabled_reason else ""
            print(f"{s.subscription_id}\t{s.status}\t{','.join(s.events)}\t{s.format}\t{host_of(s.url)}{reason}")
        return 0
    if action == "show":
        async with engine.connect() as conn:
            stored = await repository.subscription(conn, args.id)
        if stored is None:
            raise NotFound(args.id)
        print(subscriptions.answer_of(stored).model_dump_json(indent=2, exclude={"secret"}))
        return 0
    if action in ("pause", "resume", "rotate"):
        patch: dict[str, Any] = (
            {"rotate_secret": True, "overlap_s": args.overlap_s}
            if action == "rotate"
            else {"status": "paused" if action == "pause" else "active"}
        )
        changed = await subscriptions.change(
            engine, sealer, args.id, SubscriptionPatch.model_validate(patch), allow_private, actor
        )
        if action == "rotate":
            print(changed.secret)
            print(f"the old secret signs too until {changed.previous_secret_until:%Y-%m-%d %H:%M:%S}Z", file=sys.stderr)
        else:
            print(f"{changed.subscription_id} is {changed.status}", file=sys.stderr)
        return 0
    if action == "delete":
        await subscriptions.remove(engine, args.id, actor)
        print(f"{args.id} deleted", file=sys.stderr)
        return 0
    if action == "test":
        return await _test(engine, args.id, settings, sealer)
    if action == "deliveries":
        async with engine.connect() as conn:
            if await repository.subscription(conn, args.id) is None:
                raise NotFound(args.id)
            rows = await repository.deliveries(conn, args.id, args.status, args.limit, None)
        for d in rows:
            last = d.last_status_code or d.last_error or ""
            print(f"{d.delivery_id}\t{d.event_type}\t{d.status}\t{d.attempts} attempt(s)\t{last}")
        return 0
    await subscriptions.retry(engine, args.id, args.delivery_id, actor)
    print(f"{args.delivery_id} will be attempted again now", file=sys.stderr)
    return 0


async def _test(engine: AsyncEngine, subscription_id: str, settings: DeliverySettings, sealer: Sealer) -> int:
    from delivery_service.worker import client_session, send_test

    async with engine.connect() as conn:
        target = await repository.target(conn, sealer, subscription_id)
    if target is None:
        raise NotFound(subscription_id)
    now = datetime.now(UTC)
    msg_id = webhook_id(subscription_id, f"test {now.isoformat()}".encode())
    async with client_session(settings) as session:
        _, answer = await send_test(session, settings, target, msg_id, now)
    ok = answer.status is not None and 200 <= answer.status < 300
    print(json.dumps({"webhook_id": msg_id, "delivered": ok, "status_code": answer.status, "error": answer.error,
                      "latency_ms": round(answer.latency_ms, 1)}))  # fmt: skip
    return 0 if ok else 1
