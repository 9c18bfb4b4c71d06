"""Which arm of an experiment a person is in (issue 38): stable for the experiment's life (the same
person, the same arm, across answers, revisions and replays) and unpredictable from outside (a keyed
hash under the pseudonym secret, so nobody can choose or foresee their arm by their id).

The person's respondent key and the experiment id, HMAC'd under the pseudonym secret, give a number
uniform in [0, 1); the arms, in the order the policy lists them, split [0, 1) by their weights. Each
experiment hashes with its own id: a person's arms in two experiments are independent."""

from __future__ import annotations

import math
from collections.abc import Sequence

from shared.pseudonyms import Pseudonyms

_SCALE = float(2**64)


class InvalidArms(ValueError):
    pass


def check_arms(arms: Sequence[tuple[str, float]]) -> None:
    """Arms as a policy must give them: at least two, named once each, weights in (0, 1] summing to 1."""
    if len(arms) < 2:
        raise InvalidArms("an experiment needs at least two arms")
    names = [name for name, _ in arms]
    if len(set(names)) != len(names):
        raise InvalidArms(f"arms named twice: {sorted({n for n in names if names.count(n) > 1})}")
    for name, weight in arms:
        if not 0 < weight <= 1:
            raise InvalidArms(f"arm {name!r}: weight {weight} is not in (0, 1]")
    total = math.fsum(weight for _, weight in arms)
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise InvalidArms(f"the arms' weights sum to {total:g}, not 1")


def position(pseudonyms: Pseudonyms, experiment_id: str, respondent_key: str) -> float:
    """The person's place in [0, 1) for this experiment."""
    token = pseudonyms.token("experiment", f"{experiment_id}\0{respondent_key}")
    return int.from_bytes(token[:8], "big") / _SCALE


def arm_of(pseudonyms: Pseudonyms, experiment_id: str, respondent_key: str, arms: Sequence[tuple[str, float]]) -> str:
    """The arm (of `arms`, checked by `check_arms`, in the policy's order) this person is in."""
    at = position(pseudonyms, experiment_id, respondent_key)
    reached = 0.0
    for name, weight in arms:
        reached += weight
        if at < reached:
            return name
    return arms[-1][0]  # the weights' sum rounded just below 1
