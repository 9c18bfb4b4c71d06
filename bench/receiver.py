"""A webhook receiver for the delivery benchmark, in its own process: `python -m bench.receiver PORT`.
POST /ok answers 200 at once and records, per request, the seconds from the event's `created_at`
(set when it was published) to its arrival; POST /hang never answers; GET /stats reports."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime

from aiohttp import web

arrived: list[float] = []  # monotonic arrival times at /ok
latencies: list[float] = []  # event published -> delivered, seconds
ids: set[str] = set()
hanging = 0


async def ok(request: web.Request) -> web.Response:
    body = await request.read()
    now = time.time()
    arrived.append(time.monotonic())
    ids.add(request.headers.get("webhook-id", ""))
    created = json.loads(body)["data"]["created_at"]
    latencies.append(now - datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    return web.Response(text="ok")


async def hang(request: web.Request) -> web.Response:
    global hanging
    hanging += 1
    await asyncio.sleep(3_600)
    return web.Response(text="late")


async def stats(request: web.Request) -> web.Response:
    return web.json_response(
        {"count": len(arrived), "distinct": len(ids), "first": arrived[0] if arrived else None,
         "last": arrived[-1] if arrived else None, "latencies": latencies, "hanging": hanging}
    )  # fmt: skip


async def reset(request: web.Request) -> web.Response:
    arrived.clear()
    latencies.clear()
    ids.clear()
    return web.Response(text="reset")


def main() -> None:
    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/hang", hang)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
