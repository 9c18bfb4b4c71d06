"""What is wrong with an input, field by field: the one shape every service reports it in, from
an HTTP body, a query parameter or one item of a batch. No HTTP here: handlers use it too."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

# No control characters in identifiers, path parameters and segment values (PostgreSQL refuses NUL,
# logs and segment keys break on the rest). Invalid Unicode (lone surrogates) fails it too.
PLAIN = r"^[^\x00-\x1f\x7f]*$"


class FieldProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    problem: str


def field_name(loc: tuple[int | str, ...]) -> str:
    """`("body", "attributes", "Plan", "[key]")` -> `attributes.Plan`: the field as the client wrote
    it, without FastAPI's source prefix or pydantic's marker for a bad dict key."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    return ".".join(str(p) for p in parts if p != "[key]") or "body"


def field_problems(errors: Iterable[Mapping[str, Any]]) -> list[FieldProblem]:
    """Each error of a validation (pydantic's or FastAPI's `errors()`), named by field, without
    the input value (it may hold personal data)."""
    return [FieldProblem(field=field_name(tuple(e["loc"])), problem=e["msg"]) for e in errors]
