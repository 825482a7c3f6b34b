"""The spec digest of an Artifact: ``sha256:<hex>`` of the canonical JSON of its locked part.

The locked part is the spec without ``displayName``, ``description`` and ``lifecycle`` (the fields
that stay editable once Registered); ``collection`` is locked too but names the Artifact rather than
what it runs, so the digest leaves it out. A Registered Artifact's digest also covers the digests its
images were resolved to at registration (``images``): the same spec text over a re-pushed tag is other
content. Canonical: parsed through :class:`kiln.api.models.ArtifactSpec`, so
defaults are applied whether or not the user wrote them and unknown fields are dropped, dumped with
camelCase names and unset fields omitted, then serialised with sorted keys and no whitespace.
Lists keep their order (the first container is the primary one; env order matters).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kiln.api.models import ArtifactSpec, ImageStatus

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


def canonical_json(spec: Mapping[str, Any] | ArtifactSpec, images: Sequence[ImageStatus] | None = None) -> str:
    """The canonical JSON text that :func:`spec_digest` hashes."""
    doc = locked_spec(spec)
    doc.pop("collection", None)
    resolved = [{"container": i.container, "digest": i.digest} for i in images or () if i.digest]
    if resolved:  # images whose tags were kept add nothing: the spec names them
        doc["resolvedImages"] = resolved
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_digest(spec: Mapping[str, Any] | ArtifactSpec, images: Sequence[ImageStatus] | None = None) -> str:
    """``sha256:<hex>`` of the canonical JSON of the locked part of an Artifact spec, and of the digests
    its images were resolved to at registration, if any.

    Accepts the ``spec`` dict of an Artifact (or of a Workload's inline ``artifact``) or a parsed
    :class:`~kiln.api.models.ArtifactSpec`; raises :class:`pydantic.ValidationError` for an invalid spec.
    """
    data = canonical_json(spec, images).encode("utf-8")
    return PREFIX + hashlib.sha256(data).hexdigest()


def registered_images(annotations: Mapping[str, str]) -> list[ImageStatus] | None:
    """The images an Artifact's registration resolved (the ``kiln.dev/images`` annotation admission
    stamps), or None when it has none (a Draft, or registered before Kiln resolved images)."""
    from kiln.names import A_IMAGES

    raw = annotations.get(A_IMAGES)
    if not raw:
        return None
    try:
        return [ImageStatus.model_validate(i) for i in json.loads(raw)]
    except (ValueError, TypeError):  # pydantic.ValidationError is a ValueError
        return None
