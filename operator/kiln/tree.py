"""Where two JSON-like values differ, as readable paths (``spec.containers[0].image``): one walker for
admission's "which locked fields changed" and the Deployment controller's "what was edited by hand"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def differences(old: Any, new: Any, path: str = "spec", *, keys: Callable[[Any, Any], list[Any]] | None = None,
                added: Callable[[str], bool] = lambda _: False,
                same: Callable[[str, Any, Any], bool] = lambda _, a, b: bool(a == b)) -> list[str]:
    """The paths where ``new`` departs from ``old``. Dicts are compared key by key (by default the
    keys of both; ``keys`` may choose others), lists of equal length item by item, anything else with
    ``same(path, a, b)``. Where ``added(path)``, keys of ``new`` missing from ``old`` are reported as
    ``<path>.<key> (added)`` even when ``keys`` leaves them out."""
    out: list[str] = []
    which = keys or (lambda a, b: sorted(set(a) | set(b)))

    def walk(a: Any, b: Any, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in which(a, b):
                walk(a.get(k), b.get(k), f"{at}.{k}")
            if keys is not None and added(at):
                out.extend(f"{at}.{k} (added)" for k in b if k not in a)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{at}[{i}]")
        elif not same(at, a, b):
            out.append(at)

    walk(old, new, path)
    return out


def changed_paths(old: Any, new: Any, path: str = "spec", limit: int = 10) -> list[str]:
    """Every path where two values differ, at most ``limit`` of them named."""
    out = differences(old, new, path)
    return out[:limit] + ([f"... ({len(out) - limit} more)"] if len(out) > limit else [])


def drift(desired: Any, live: Any) -> list[str]:
    """Where a live child departs from its desired state: values changed, items added or removed, and
    keys added to the pod spec or a container (the API server's defaults are in ``desired``; any other
    key the live object has there was added by hand)."""
    return differences(desired, live, keys=lambda d, _: list(d), added=_pod_or_container, same=_same_value)


def _pod_or_container(path: str) -> bool:
    return path.endswith("template.spec") or (".containers[" in path and path.endswith("]"))


def _same_value(path: str, a: Any, b: Any) -> bool:
    """Equal, or the same quantity (the API server normalises them: "0.1" is stored as "100m")."""
    if a == b:
        return True
    if ".resources." not in path:
        return False
    from kubernetes import utils

    parse: Any = utils.parse_quantity  # untyped
    try:
        return bool(parse(a) == parse(b))
    except (ValueError, TypeError):
        return False
