"""spec_digest: canonical, stable across key order and defaulting, blind to the unlocked fields."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from kiln.api.digest import canonical_json, locked_spec, spec_digest
from kiln.api.models import ArtifactSpec


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "app",
                "image": "nginx:1.27",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)"}],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "resources": {"limits": {"memory": "1Gi", "nvidia.com/gpu": 1}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
            },
            {"name": "sidecar", "image": "busybox", "command": ["sleep", "inf"]},
        ],
        **extra,
    }


def test_format() -> None:
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", spec_digest(spec()))


def test_golden_value() -> None:
    # Pinned: Deployments pin this digest, so canonicalisation must never change silently.
    assert canonical_json({"containers": [{"name": "app", "image": "nginx"}]}) == (
        '{"containers":[{"image":"nginx","name":"app"}]}'
    )
    assert spec_digest({"containers": [{"name": "app", "image": "nginx"}]}) == (
        "sha256:9ebb6530acf11d98e067d3e94521aa5a50ee114c02284d7b573047387622792a"
    )


def test_unlocked_fields_do_not_count() -> None:
    base = spec_digest(spec())
    assert spec_digest(spec(displayName="My app", description="v2")) == base
    assert spec_digest(spec(lifecycle="Registered")) == base
    assert "lifecycle" not in locked_spec(spec(lifecycle="Registered"))


def test_key_order_does_not_count() -> None:
    s = spec()
    reordered = {"containers": [dict(reversed(list(c.items()))) for c in s["containers"]]}
    assert spec_digest(reordered) == spec_digest(s)


def test_defaults_do_not_count() -> None:
    explicit = spec()
    explicit["containers"][0]["ports"][0]["protocol"] = "TCP"
    assert spec_digest(explicit) == spec_digest(spec())


def test_unknown_fields_do_not_count() -> None:
    s = spec()
    s["containers"][0]["securityContext"] = {"privileged": True}
    assert spec_digest(s) == spec_digest(spec())


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["containers"][0].update(image="nginx:1.28"),
        lambda s: s["containers"][0]["env"].reverse(),  # env order matters ($(A) expansion)
        lambda s: s["containers"].reverse(),  # the first container is the primary one
        lambda s: s["containers"][0]["ports"][0].update(protocol="UDP"),
        lambda s: s["containers"][1].update(args=["-v"]),
        lambda s: s["containers"][0]["readinessProbe"].update(periodSeconds=3),
    ],
)
def test_locked_changes_count(change: Any) -> None:
    changed = copy.deepcopy(spec())
    change(changed)
    assert spec_digest(changed) != spec_digest(spec())


def test_model_and_inline_artifact() -> None:
    s = spec(lifecycle="Registered")
    assert spec_digest(ArtifactSpec.model_validate(s)) == spec_digest(s)
    inline = {"displayName": "x", "containers": spec()["containers"]}  # a Workload's spec.artifact
    assert spec_digest(inline) == spec_digest(s)


def test_invalid_spec_raises() -> None:
    with pytest.raises(ValidationError):
        spec_digest({"containers": []})
