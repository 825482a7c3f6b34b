"""Which fields differ between two JSON-like values, as readable paths (``spec.containers[0].image``)."""

from __future__ import annotations

from typing import Any


def changed_paths(old: Any, new: Any, path: str = "spec", limit: int = 10) -> list[str]:
    out: list[str] = []
    _walk(old, new, path, out)
    return out[:limit] + ([f"... ({len(out) - limit} more)"] if len(out) > limit else [])


def _walk(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _walk(old.get(key), new.get(key), f"{path}.{key}", out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk(a, b, f"{path}[{i}]", out)
    elif old != new:
        out.append(path)
