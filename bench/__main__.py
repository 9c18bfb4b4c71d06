"""`make bench`: measure the loop on this machine and write docs/benchmarks.md.

ingest   bench/ingest.py: single POSTs, validate-only, batch import (wrk against `nps ingest`)
scoring  bench/scoring.py: a backlog consumed raw, by `nps scoring` and by a replay; end to end
followup bench/followup.py: the same kind of backlog routed by `nps followup`
delivery bench/delivery.py: webhooks sent by `nps delivery` to a local receiver, and their latency
alerts   bench/alerts.py: evaluation rounds over 10,000 segments
themes   bench/themes.py: the backlog, with comments, tagged and counted by `nps themes`
collect  bench/collect.py: GET /v1/prompt at 2,000/s, publishable POSTs, response-rate counting
widget   bench/widget.py: the web widget's scripts, bytes and gzipped
loop     bench/loop.py: `nps up`'s six services, unpinned, through a backlog shaped like real traffic
broker   bench/broker.py: the embedded broker's CPU per message: produce only, and a trickle read by groups"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.alerts import bench_alerts, write_alerts_report
from bench.broker import bench_broker, write_broker_report
from bench.collect import bench_collect, write_collect_report
from bench.delivery import bench_delivery, write_delivery_report
from bench.followup import bench_followup, write_followup_report
from bench.ingest import bench_ingest, ensure_wrk, write_report
from bench.loop import bench_loop, write_loop_report
from bench.scoring import bench_scoring, write_scoring_report
from bench.storage import bench_storage, write_storage_report
from bench.themes import bench_themes, write_themes_report
from bench.widget import write_widget_report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="length of each measured run")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the measured service with py-spy and PostgreSQL's active statements (the loop: PostgreSQL "
        "only, each phase); stacks and summaries go to DIR",
    )
    parser.add_argument(
        "--only",
        choices=[
            "ingest",
            "scoring",
            "followup",
            "delivery",
            "alerts",
            "themes",
            "storage",
            "collect",
            "widget",
            "loop",
            "broker",
        ],
        help="run one benchmark (its section is rewritten)",
    )
    parser.add_argument("--events", type=int, default=200_000, help="scoring backlog size")
    parser.add_argument("--e2e-seconds", type=int, default=20, help="end-to-end latency run length (0: skip)")
    parser.add_argument("--sustain-seconds", type=int, default=60, help="the loop's sustained 2,000 POSTs/s run")
    args = parser.parse_args()
    if args.only in (None, "ingest"):
        ensure_wrk()
        results, counts = bench_ingest(args.seconds, args.profile)
        scaled, _ = bench_ingest(args.seconds, None, workers=2, rounds=1)
        print(f"wrote {write_report(results, counts, args.seconds, scaled)}")
    if args.only in (None, "scoring"):
        print(f"wrote {write_scoring_report(bench_scoring(args.events, args.e2e_seconds, args.profile))}")
    if args.only in (None, "followup"):
        print(f"wrote {write_followup_report(bench_followup(args.events, args.profile))}")
    if args.only in (None, "delivery"):
        print(f"wrote {write_delivery_report(bench_delivery(profile_dir=args.profile))}")
    if args.only in (None, "alerts"):
        print(f"wrote {write_alerts_report(bench_alerts())}")
    if args.only in (None, "themes"):
        print(f"wrote {write_themes_report(*bench_themes(args.events))}")
    if args.only in (None, "collect"):
        ensure_wrk()
        print(f"wrote {write_collect_report(bench_collect(args.seconds))}")
    if args.only in (None, "widget"):
        print(f"wrote {write_widget_report()}")
    if args.only in (None, "loop"):
        print(f"wrote {write_loop_report(bench_loop(args.events, args.sustain_seconds, args.profile))}")
    if args.only in (None, "broker"):
        print(f"wrote {write_broker_report(bench_broker())}")
    if args.only in (None, "storage"):
        print(f"wrote {write_storage_report(bench_storage(args.events))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
