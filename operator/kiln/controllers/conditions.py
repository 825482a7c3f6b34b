"""Standard Kubernetes conditions (metav1.Condition) of Kiln's objects."""

from __future__ import annotations

import datetime

from kiln.api.models import Condition, ConditionStatus, ConditionType

READY, AVAILABLE, PROGRESSING = ConditionType.READY, ConditionType.AVAILABLE, ConditionType.PROGRESSING
APPROVED, UPDATE_AVAILABLE = ConditionType.APPROVED, ConditionType.UPDATE_AVAILABLE


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    """A time as :func:`now` writes it (RFC 3339, UTC)."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def condition(type_: ConditionType, ok: bool | None, reason: str, message: str, generation: int | None) -> Condition:
    status = ConditionStatus.UNKNOWN if ok is None else (ConditionStatus.TRUE if ok else ConditionStatus.FALSE)
    return Condition(type=type_, status=status, reason=reason, message=message, observed_generation=generation)


def merge(old: list[Condition] | None, new: list[Condition], at: str | None = None) -> list[Condition]:
    """The whole new conditions list, keeping ``lastTransitionTime`` where a status did not change.

    Status is written with a JSON merge-patch, which replaces lists whole: always write them all."""
    before = {c.type: c for c in old or []}
    at = at or now()
    out = []
    for c in new:
        prev = before.get(c.type)
        same = prev is not None and prev.status == c.status and prev.last_transition_time
        out.append(c.model_copy(update={"last_transition_time": prev.last_transition_time if same and prev else at}))
    return out


def get(conditions: list[Condition] | None, type_: ConditionType) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)
