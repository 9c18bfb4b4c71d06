"""The peer: a Quix Streams application computing what scoring computes over the bench's backlog,
the exact per-segment daily counts (the default dimensions: `all`, `channel`, `survey_id`, every
attribute), deduplicated by `response_id` with the highest version kept (a redelivered or retried
event changes nothing; a revision moves its counts), all of it in Quix's own state store (RocksDB;
its changelog topics left out, see below): each response's latest version keyed by respondent, as
the topic is, and each segment's daily counts keyed by segment, through Quix's repartition topic
(`group_by`), as a Quix application must to keep per-segment state.

Runs in its own virtualenv (`make bench` creates .venv-peer with bench/peer-requirements.txt):
Quix is a bench-only dependency and pins its own versions of libraries we use.

    python bench/peer_quix.py BOOTSTRAP TOPIC EXPECTED OUT.json GROUP

(GROUP: a consumer group of its own for each run over the same topic, since Quix names its
repartition topic after it) writes the seconds from the first event processed to the last (the consumer group's join, ~20 s
on the local broker, left out) and the final counts, which the bench compares with scoring's.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from quixstreams import Application, State  # type: ignore[import-not-found, unused-ignore]


def category(score: int) -> int:
    return 0 if score >= 9 else 1 if score >= 7 else 2


def segments(value: dict[str, Any]) -> list[str]:
    found = [f"{k}:{v}" for k, v in value.get("attributes", {}).items()]
    for name in ("channel", "survey_id"):
        if value.get(name) is not None:
            found.append(f"{name}:{value[name]}")
    return ["all", *found]


def main() -> None:
    bootstrap, topic_name, expected, out, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    totals: dict[tuple[str, str], list[int]] = {}  # a mirror of the counts' state, for the final check
    progress = {"seen": 0, "emitted": 0, "applied": 0, "first": 0.0, "last": 0.0}

    def changes(stored: list[Any], sign: int) -> list[dict[str, Any]]:
        _, score, day, keys = stored
        return [{"segment": s, "day": day, "cell": category(score), "sign": sign} for s in keys]

    def deltas(value: dict[str, Any], state: State) -> list[dict[str, Any]]:
        """Stage 1, keyed by respondent: the response's latest version in state; its count changes."""
        if not progress["seen"]:
            progress["first"] = time.perf_counter()
        progress["seen"] += 1
        out: list[dict[str, Any]] = []
        if value.get("type") in ("ResponseSubmitted", "ResponseRevised"):
            response_id = value["response_id"]
            version = value.get("version", 1)
            old = state.get(response_id)
            if old is None or version > old[0]:
                answered = datetime.fromisoformat(value["answered_at"]).astimezone(UTC)
                new = [version, value["score"], answered.date().isoformat(), segments(value)]
                state.set(response_id, new)
                out = (changes(old, -1) if old is not None else []) + changes(new, 1)
        progress["emitted"] += len(out)
        return out

    def count(change: dict[str, Any], state: State) -> None:
        """Stage 2, keyed by segment (repartitioned): the segment's daily counts in state."""
        cell = state.get(change["day"]) or [0, 0, 0]
        cell[change["cell"]] += change["sign"]
        state.set(change["day"], cell)
        mirror = totals.setdefault((change["segment"], change["day"]), [0, 0, 0])
        mirror[change["cell"]] += change["sign"]
        progress["applied"] += 1
        if progress["seen"] >= expected and progress["applied"] >= progress["emitted"]:
            progress["last"] = time.perf_counter()
            app.stop()

    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        # The local broker (tansu) describes topics without `retention.ms`, which Quix needs to
        # configure changelog topics: the state lives in RocksDB only, without its changelog
        # (less work than Quix would do in production: the comparison favours the peer).
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer="json", key_deserializer="str")
    # Quix reads the topic's retention to derive its internal topics' configuration; the local
    # broker leaves it out of its description: "-1" (forever) is what the topic has.
    topic.broker_config.extra_config.setdefault("retention.ms", "-1")
    sdf = app.dataframe(topic).apply(deltas, stateful=True, expand=True)
    sdf.group_by("segment").update(count, stateful=True)
    try:
        app.run()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)  # its RocksDB files: ~9 MB a run
    daily = [[s, d, *c] for (s, d), c in totals.items() if c != [0, 0, 0]]
    with open(out, "w") as f:
        json.dump({"events": progress["seen"], "seconds": progress["last"] - progress["first"], "daily": daily}, f)


if __name__ == "__main__":
    main()
