"""`nps webhooks ...`'s arguments. Apart from its actions (delivery_service/cli.py), so that every
`nps` process, which builds the whole parser, does not import the delivery service to do so."""

from __future__ import annotations

from typing import Any

from delivery_service.domain import EVENT_TYPES


def add_parser(sub: Any) -> Any:
    hooks = sub.add_parser("webhooks", help="webhook subscriptions: create, list, pause, rotate, test, deliveries")
    actions = hooks.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="subscribe an endpoint; prints its id and secret (shown once)")
    create.add_argument("--url", required=True, help="https:// endpoint")
    create.add_argument(
        "--event", action="append", required=True, metavar="TYPE", help=f"repeat: {', '.join(EVENT_TYPES)}"
    )
    create.add_argument("--kind", action="append", metavar="KIND", help="only these follow-up kinds (repeat)")
    create.add_argument(
        "--segment", action="append", metavar="SEGMENT", help="only these segments: channel:web (repeat)"
    )
    create.add_argument("--format", choices=("standard", "slack"), default="standard")
    create.add_argument("--description")
    actions.add_parser("list", help="every subscription: id, status, events, host")
    for name, text in (
        ("show", "one subscription, as JSON (never its secret)"),
        ("pause", "stop sending (events are kept and sent on resume)"),
        ("resume", "send again (a disabled subscription too)"),
        ("delete", "unsubscribe; its pending deliveries go with it"),
        ("test", "send a signed WebhookTest event now and say how the endpoint answered"),
    ):
        actions.add_parser(name, help=text).add_argument("id")
    rotate = actions.add_parser("rotate", help="a new secret (printed once); the old one signs beside it a while")
    rotate.add_argument("id")
    rotate.add_argument("--overlap-s", type=int, default=86_400, help="how long the old secret still signs")
    deliveries = actions.add_parser("deliveries", help="a subscription's latest deliveries, newest first")
    deliveries.add_argument("id")
    deliveries.add_argument("--status", choices=("pending", "delivered", "failed", "cancelled"))
    deliveries.add_argument("--limit", type=int, default=20)
    retry = actions.add_parser("retry", help="attempt a failed delivery again now")
    retry.add_argument("id")
    retry.add_argument("delivery_id")
    return hooks
