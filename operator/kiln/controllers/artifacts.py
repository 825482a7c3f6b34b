"""Artifact controller: its status (lifecycle, digest, who registered it), and restarting the Workloads
that run a Draft when its containers change."""

from __future__ import annotations

from typing import Any

import kopf

from kiln import kube, metrics
from kiln.api.models import ArtifactStatus, Lifecycle, ObjectMeta, status_of
from kiln.controllers import runtime, workloads
from kiln.controllers.cache import ArtifactView, artifact_view
from kiln.controllers.conditions import READY, condition, merge, now
from kiln.names import A_REGISTERED_AT, A_REGISTERED_BY, ARTIFACTS, GROUP, VERSION


def plan_status(meta: ObjectMeta, lifecycle: Lifecycle, view: ArtifactView, old: ArtifactStatus,
                at: str) -> ArtifactStatus:
    """The Artifact's status, from its spec as indexed (pure)."""
    gen = meta.generation
    if view.spec is None:
        return ArtifactStatus(observed_generation=gen, lifecycle=lifecycle, conditions=merge(old.conditions, [
            condition(READY, False, "InvalidSpec", view.problem or "", gen)], at))
    registered = view.spec.registered
    # Frozen at registration: the locked spec cannot change afterwards (CEL + webhook).
    keep = registered and old.lifecycle == Lifecycle.REGISTERED and old.spec_digest
    digest = old.spec_digest if keep else view.registered_digest
    n = len(view.spec.containers)
    pinned = sum(1 for i in view.images or () if i.digest)
    msg = (f"registered{f' as version {view.version} of {view.collection}' if view.version else ''}: {n} "
           f"container(s) locked at {(digest or '')[:19]}"
           + (f", {pinned} of {n} image(s) pinned by digest" if view.images is not None else "") if registered
           else f"draft: {n} container(s), editable")
    return ArtifactStatus(
        observed_generation=gen, lifecycle=view.spec.lifecycle, spec_digest=digest,
        # Recorded by the admission webhook from the request's userInfo; frozen once observed.
        registered_by=(old.registered_by or meta.annotations.get(A_REGISTERED_BY) or "unknown") if registered else None,
        registered_at=(old.registered_at or meta.annotations.get(A_REGISTERED_AT) or at) if registered else None,
        # Recorded by the admission webhook at registration (labels and an annotation only it writes).
        collection=view.collection, version=view.version, images=list(view.images) if view.images else None,
        conditions=merge(old.conditions, [condition(READY, True, view.spec.lifecycle.value, msg, gen)],
                         at))


def _lifecycle(spec: Any) -> Lifecycle:
    """The lifecycle a spec asks for, even one that does not parse as a whole."""
    try:
        return Lifecycle((spec or {}).get("lifecycle") or Lifecycle.DRAFT)
    except ValueError:
        return Lifecycle.DRAFT


@kopf.on.resume(GROUP, VERSION, ARTIFACTS)
@kopf.on.create(GROUP, VERSION, ARTIFACTS)
@kopf.on.update(GROUP, VERSION, ARTIFACTS)
async def artifact_changed(body: kopf.Body, namespace: str | None, name: str, reason: str, memo: Any,
                           logger: kopf.Logger, **_: Any) -> None:
    with metrics.reconciling("artifact"):
        await _reconcile(runtime.of(memo), body, str(namespace), name, reason, logger)


async def _reconcile(rt: runtime.Runtime, body: kopf.Body, namespace: str, name: str, reason: str,
                     logger: kopf.Logger) -> None:
    rt.indexes.artifacts.update(body)
    # A Workload waiting for this Artifact starts; one running an older draft restarts. This comes
    # first, so that status.observedGeneration says the change has been acted upon. (On resume the
    # Workloads' own resume handlers do it.)
    if reason != "resume":
        await workloads.reconcile_users(rt, namespace, name, logger)
    view = rt.indexes.artifacts.one((namespace, name)) or artifact_view(body)
    meta = ObjectMeta.model_validate(body["metadata"])
    old = status_of(ArtifactStatus, body)
    await rt.in_thread(kube.write_status, ARTIFACTS, meta, old,
                       plan_status(meta, _lifecycle(body.get("spec")), view, old, now()))
