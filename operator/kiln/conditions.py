"""Standard Kubernetes conditions (metav1.Condition), kept as plain dicts."""

from __future__ import annotations

import datetime
from typing import Any

Condition = dict[str, Any]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, ok: bool | None, reason: str, message: str, generation: int | None) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    c: Condition = {"type": type_, "status": status, "reason": reason, "message": message}
    if generation is not None:
        c["observedGeneration"] = generation
    return c


def merge(old: list[Condition] | None, new: list[Condition], at: str | None = None) -> list[Condition]:
    """The whole new conditions list, keeping ``lastTransitionTime`` where a status did not change.

    kopf patches status with a JSON merge-patch, which replaces lists whole: always write them all.
    """
    before = {c.get("type"): c for c in old or []}
    at = at or now()
    out = []
    for c in new:
        prev = before.get(c["type"])
        same = prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime")
        out.append({**c, "lastTransitionTime": prev["lastTransitionTime"] if same and prev else at})
    return out


def get(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
