"""How a policy rule writes an experiment (issue 38), and the experiment it compiles to. Pure.

    holdout: 0.1                        # 10% of the people the rule matches get nothing from it
    holdout: {share: 0.1, id: passives-2027}

    experiment:
      id: welcome-v2                    # default: the rule's name
      control: control                  # default: the first arm whose action is `none`, else the first arm
      arms:
        control: {weight: 0.2, action: none}
        short: {weight: 0.4, template: welcome_short}
        long: 0.4                       # a bare weight: the rule's own action and template

A holdout is an experiment with two arms, `treated` (the rule's action) and `held_out` (action
`none`), whose control is `held_out`. An arm whose action is `none` is held out: its people get no
message and no ticket from the rule (status `held_out`), and are surveyed again as usual."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TEMPLATE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
ACTION_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
HELD_OUT = "none"  # an arm with this action gets nothing from the rule


class Holdout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    share: float = Field(gt=0, lt=1, description="the share of the rule's people held out")
    id: str | None = Field(default=None, pattern=NAME_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _bare_share(cls, value: Any) -> Any:
        """`holdout: 0.1` means `holdout: {share: 0.1}`."""
        return {"share": value} if isinstance(value, int | float) and not isinstance(value, bool) else value


class ArmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(gt=0, le=1)
    action: str | None = Field(default=None, pattern=ACTION_PATTERN, description="default: the rule's")
    template: str | None = Field(default=None, pattern=TEMPLATE_PATTERN, description="default: the rule's")

    @model_validator(mode="before")
    @classmethod
    def _bare_weight(cls, value: Any) -> Any:
        """`long: 0.4` means `long: {weight: 0.4}`."""
        return {"weight": value} if isinstance(value, int | float) and not isinstance(value, bool) else value


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=NAME_PATTERN)
    control: str | None = Field(default=None, pattern=NAME_PATTERN)
    arms: dict[str, ArmSpec] = Field(min_length=2, max_length=10)

    @model_validator(mode="after")
    def _arm_names(self) -> ExperimentSpec:
        for name in self.arms:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"arm name {name!r}: lowercase letters, digits, - and _, at most 64")
        if self.control is not None and self.control not in self.arms:
            raise ValueError(f"control {self.control!r} is not one of the arms {sorted(self.arms)}")
        return self


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    weight: float
    action: str  # `none`: held out
    template: str | None

    @property
    def held_out(self) -> bool:
        return self.action == HELD_OUT

    def recorded(self) -> list[Any]:
        """What a reload may not change about it: name, weight and action (its template may be edited)."""
        return [self.name, self.weight, self.action]


@dataclass(frozen=True, slots=True)
class Experiment:
    """An experiment as the planner runs it: the arms in the policy's order, and which is control."""

    experiment_id: str
    rule: str
    arms: tuple[Arm, ...]
    control: str

    @property
    def weights(self) -> tuple[tuple[str, float], ...]:
        return tuple((a.name, a.weight) for a in self.arms)

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def recorded(self) -> list[list[Any]]:
        return [a.recorded() for a in self.arms]


def compile_experiment(
    rule: str, action: str, template: str | None, holdout: Holdout | None, spec: ExperimentSpec | None
) -> Experiment | None:
    """The rule's experiment (None: it has none). Assumes the spec passed its model's checks."""
    if holdout is not None:
        treated = Arm("treated", 1 - holdout.share, action, template)
        return Experiment(
            holdout.id or rule, rule, (treated, Arm("held_out", holdout.share, HELD_OUT, None)), "held_out"
        )
    if spec is None:
        return None
    arms = tuple(
        Arm(
            name,
            a.weight,
            a.action or action,
            None if (a.action or action) == HELD_OUT else (a.template if a.template is not None else template),
        )
        for name, a in spec.arms.items()
    )
    control = spec.control or next((a.name for a in arms if a.held_out), arms[0].name)
    return Experiment(spec.id or rule, rule, arms, control)
