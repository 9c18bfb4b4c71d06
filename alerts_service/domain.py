"""Drop detection. Pure: plain values in, a decision out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.nps import Counts

_NAMESPACE = uuid.UUID("0b7f3c2e-8d51-4a7e-9f0a-6c1d2e3f4a5b")


@dataclass(frozen=True, slots=True)
class DropRule:
    drop_points: float
    min_responses: int

    def dropped(self, current: Counts, baseline: Counts) -> bool | None:
        """True: a drop. False: no drop. None: too few responses to say either way."""
        if current.n < self.min_responses or baseline.n < self.min_responses:
            return None
        assert current.nps is not None and baseline.nps is not None
        return baseline.nps - current.nps >= self.drop_points


class Transition(StrEnum):
    FIRE = "fire"
    RESOLVE = "resolve"
    NONE = "none"


def transition(firing: bool, dropped: bool | None) -> Transition:
    """Alerts change state only on evidence: too little data leaves the state as it is."""
    if dropped is None:
        return Transition.NONE
    if dropped and not firing:
        return Transition.FIRE
    if not dropped and firing:
        return Transition.RESOLVE
    return Transition.NONE


def alert_id(segment: str, fired_by: datetime) -> str:
    return f"al_{uuid.uuid5(_NAMESPACE, f'{segment}@{fired_by.isoformat()}').hex}"
