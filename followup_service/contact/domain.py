"""Contact rules. Pure: whether a message of a kind may reach a person now, and from when."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class ContactHistory:
    """What the contact rules look at for one person: an opt-out, and the messages sent to them
    (kind, when), oldest first."""

    opted_out: bool = False
    sent: list[tuple[str, datetime]] = field(default_factory=list)


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class Verdict:
    allowed: bool
    reason: str | None = None  # opted_out, throttled
    eligible_at: datetime | None = None  # when a message of that kind would be allowed (never: None)


@dataclass(frozen=True, slots=True)
class ContactRules:
    """Survey fatigue and consent: at most one message of a kind per `min_days_between` (per kind,
    `default_min_days` otherwise), at most `max_per_window` messages in any `window_days`, none after
    an opt-out. Tickets are not messages: a detractor always reaches support."""

    default_min_days: float = 30
    min_days_between: Mapping[str, float] = field(default_factory=dict)
    max_per_window: int = 3
    window_days: float = 90

    def gap(self, kind: str) -> timedelta:
        return timedelta(days=self.min_days_between.get(kind, self.default_min_days))

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.window_days)

    @property
    def lookback(self) -> timedelta:
        """How far back the history must reach for every rule."""
        return max([self.window, timedelta(days=self.default_min_days)] + [self.gap(k) for k in self.min_days_between])

    def verdict(self, history: ContactHistory, kind: str, now: datetime, any_kind: bool = False) -> Verdict:
        """May a message of `kind` go to this person now? With `any_kind`: a message of any kind
        (the gap is the default one, counted from their latest message whatever its kind)."""
        if history.opted_out:
            return Verdict(False, "opted_out")
        waits = []
        gap = timedelta(days=self.default_min_days) if any_kind else self.gap(kind)
        same = [at for k, at in history.sent if (any_kind or k == kind) and at > now - gap]
        if same:
            waits.append(max(same) + gap)
        recent = sorted(at for _, at in history.sent if at > now - self.window)
        if len(recent) >= self.max_per_window:
            waits.append(recent[len(recent) - self.max_per_window] + self.window)
        if waits:
            return Verdict(False, "throttled", max(waits))
        return Verdict(True)
