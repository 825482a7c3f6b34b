"""The spec digest of an Artifact: ``sha256:<hex>`` of the canonical JSON of its locked part.

The locked part is the spec without ``displayName``, ``description`` and ``lifecycle`` (the fields
that stay editable once Registered). Canonical: parsed through :class:`kiln.api.models.ArtifactSpec`, so
defaults are applied whether or not the user wrote them and unknown fields are dropped, dumped with
camelCase names and unset fields omitted, then serialised with sorted keys and no whitespace.
Lists keep their order (the first container is the primary one; env order matters).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kiln.api.models import ArtifactSpec

PREFIX = "sha256:"


def _model(spec: Mapping[str, Any] | ArtifactSpec) -> ArtifactSpec:
    return spec if isinstance(spec, ArtifactSpec) else ArtifactSpec.model_validate(spec)


def locked_spec(spec: Mapping[str, Any] | ArtifactSpec) -> dict[str, Any]:
    """The locked part of an Artifact spec, canonicalised (defaults applied, camelCase keys)."""
    return _model(spec).model_dump(
        mode="json",
        by_alias=True,
        exclude_none=True,
        exclude=set(ArtifactSpec.UNLOCKED_FIELDS),
    )


def canonical_json(spec: Mapping[str, Any] | ArtifactSpec) -> str:
    """The canonical JSON text that :func:`spec_digest` hashes."""
    return json.dumps(locked_spec(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_digest(spec: Mapping[str, Any] | ArtifactSpec) -> str:
    """``sha256:<hex>`` of the canonical JSON of the locked part of an Artifact spec.

    Accepts the ``spec`` dict of an Artifact (or of a Workload's inline ``artifact``) or a parsed
    :class:`~kiln.api.models.ArtifactSpec`; raises :class:`pydantic.ValidationError` for an invalid spec.
    """
    data = canonical_json(spec).encode("utf-8")
    return PREFIX + hashlib.sha256(data).hexdigest()
