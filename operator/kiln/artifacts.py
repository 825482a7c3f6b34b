"""Artifact reconcile: status (digest, lifecycle, Ready), and restarting the Workloads that run a
Draft when its containers change."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pydantic

from kiln import builders as b
from kiln import conditions as cond
from kiln import kube, workloads
from kiln.digest import spec_digest

Body = dict[str, Any]
ARTIFACTS = (b.GROUP, b.VERSION, "artifacts")


def desired_status(body: Body) -> Body:
    """The Artifact's status, from its spec (pure)."""
    meta, spec = body["metadata"], body.get("spec") or {}
    old = body.get("status") or {}
    lifecycle = spec.get("lifecycle", "Draft")
    registered = lifecycle == "Registered"
    # Frozen at registration: the locked spec cannot change afterwards (CEL + webhook).
    try:
        digest = old["specDigest"] if registered and old.get("lifecycle") == "Registered" \
            and old.get("specDigest") else spec_digest(spec)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"spec.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return {"observedGeneration": meta.get("generation"), "lifecycle": lifecycle,
                "conditions": cond.merge(old.get("conditions"), [cond.condition(
                    "Ready", False, "InvalidSpec", problems, meta.get("generation"))])}
    n = len(spec.get("containers") or [])
    msg = (f"registered: {n} container(s) locked at {digest[:19]}" if registered
           else f"draft: {n} container(s), editable")
    registration: Body = {}
    if registered:
        # Recorded by the admission webhook from the request's userInfo; frozen once observed.
        ann = meta.get("annotations") or {}
        registration = {
            "registeredBy": old.get("registeredBy") or ann.get("kiln.dev/registered-by") or "unknown",
            "registeredAt": old.get("registeredAt") or ann.get("kiln.dev/registered-at") or cond.now(),
        }
    return {
        "observedGeneration": meta.get("generation"),
        "lifecycle": lifecycle,
        "specDigest": digest,
        **registration,
        "conditions": cond.merge(old.get("conditions"), [
            cond.condition("Ready", True, "Registered" if registered else "Draft", msg, meta.get("generation")),
        ]),
    }


@kopf.on.resume(*ARTIFACTS)
@kopf.on.create(*ARTIFACTS)
@kopf.on.update(*ARTIFACTS)
def artifact_changed(body: Body, namespace: str, name: str, reason: str, logger: logging.Logger,
                     **kwargs: Any) -> None:
    # A Workload waiting for this Artifact starts; one running an older draft restarts. This comes
    # first, so that status.observedGeneration says the change has been acted upon. (On resume the
    # Workloads' own resume handlers do it.)
    workloads.INDEXES.artifacts.update(body)
    if reason != "resume":
        workloads.reconcile_users(namespace, name, workloads.INDEXES, logger)
    old = dict(body.get("status") or {})
    new = desired_status(dict(body))
    if any(old.get(k) != v for k, v in new.items()):
        kube.patch_kiln_status("artifacts", namespace, name, new)
