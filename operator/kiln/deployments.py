"""Governed Deployments (deployments.kiln.dev): a Registered Artifact, pinned by digest, run as an
apps/v1 Deployment plus a Service (and an optional PodDisruptionBudget), with an audit trail."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from kiln import builders as b
from kiln import conditions as cond
from kiln import kube
from kiln.api import MAX_HISTORY
from kiln.digest import spec_digest

Body = dict[str, Any]
DEPLOYMENTS = (b.GROUP, b.VERSION, "deployments")
A_CHANGED_BY = "kiln.dev/changed-by"


def history_entries(dep: Body, art_name: str, digest: str, replicas: int, at: str) -> list[Body]:
    """What changed since the last audited state: creation, an artifact switch, a scale (pure)."""
    history = (dep.get("status") or {}).get("history") or []
    actor = ((dep["metadata"].get("annotations") or {}).get(A_CHANGED_BY)) or "unknown"
    base = {"time": at, "actor": actor, "artifact": art_name, "digest": digest, "replicas": replicas}
    if not history:
        return [{**base, "action": "Created",
                 "message": f"created with Artifact {art_name} ({digest[:19]}), {replicas} replica(s)"}]
    last = history[-1]
    out = []
    if last.get("artifact") != art_name or last.get("digest") != digest:
        out.append({**base, "action": "ArtifactSwitched",
                    "message": f"Artifact {last.get('artifact')} -> {art_name} ({digest[:19]})"})
    if last.get("replicas") != replicas:
        out.append({**base, "action": "Scaled", "message": f"replicas {last.get('replicas')} -> {replicas}"})
    return out


def rollout_conditions(apps: Body | None, replicas: int, gen: int | None) -> tuple[list[cond.Condition], int]:
    """Ready / Progressing / Available from the apps/v1 Deployment's status, kstatus-style (pure)."""
    st = (apps or {}).get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    if apps is None:
        msg = "creating the apps/v1 Deployment"
        return [cond.condition("Ready", False, "Creating", msg, gen),
                cond.condition("Progressing", True, "Creating", msg, gen),
                cond.condition("Available", False, "Creating", msg, gen)], 0
    observed = st.get("observedGeneration") == apps["metadata"].get("generation")
    updated = int(st.get("updatedReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    total = int(st.get("replicas") or 0)
    apps_conds = {c["type"]: c for c in st.get("conditions") or []}
    stalled = (apps_conds.get("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded"
    done = observed and updated == replicas and ready == replicas and available == replicas and total == replicas
    msg = f"{ready}/{replicas} ready, {updated} updated, {available} available"
    if done:
        ready_c = cond.condition("Ready", True, "RolloutComplete", msg, gen)
    elif stalled:
        ready_c = cond.condition("Ready", False, "ProgressDeadlineExceeded", msg, gen)
    else:
        ready_c = cond.condition("Ready", False, "RollingOut", msg, gen)
    avail = apps_conds.get("Available") or {}
    return [
        ready_c,
        cond.condition("Progressing", not done and not stalled,
                       "RolloutComplete" if done else ("ProgressDeadlineExceeded" if stalled else "RollingOut"),
                       msg, gen),
        cond.condition("Available", avail.get("status") == "True" or (replicas == 0 and observed),
                       str(avail.get("reason") or "NoPods"), str(avail.get("message") or msg), gen),
    ], ready


def reconcile(namespace: str, name: str, logger: logging.Logger) -> None:
    with kube.locked("deployment", namespace, name):
        dep = kube.get_kiln("deployments", namespace, name)
        if dep is None or dep["metadata"].get("deletionTimestamp"):
            return
        try:
            _reconcile(dep, logger)
        except kube.ChildConflict as e:
            _blocked(dep, "NameConflict", str(e))


def _blocked(dep: Body, reason: str, msg: str) -> None:
    """Report a problem without touching what runs: production keeps its last good state."""
    gen = dep["metadata"].get("generation")
    kopf.warn(dep, reason=reason, message=msg)
    old = dep.get("status") or {}
    kept = {k: v for k, v in old.items() if k in ("artifact", "replicas", "readyReplicas", "history")}
    kube.write_status("deployments", dep, kept, [
        cond.condition("Ready", False, reason, msg, gen),
        cond.condition("Progressing", False, reason, msg, gen),
        cond.get(old.get("conditions"), "Available") or cond.condition("Available", False, reason, msg, gen),
    ])


def _reconcile(dep: Body, logger: logging.Logger) -> None:
    meta, spec = dep["metadata"], dep.get("spec") or {}
    ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
    status = dep.get("status") or {}
    art_name = (spec.get("artifactRef") or {}).get("name")
    if not art_name:  # workloadRef alone, admitted while the webhook was unavailable
        wl = kube.get_kiln("workloads", ns, (spec.get("workloadRef") or {}).get("name", ""))
        if wl is None:
            return _blocked(dep, "WorkloadNotFound", f"Workload {spec.get('workloadRef')} not found")
        art_name = ((wl.get("spec") or {}).get("artifactRef") or {}).get("name") or wl["metadata"]["name"]
    artifact = kube.get_kiln("artifacts", ns, art_name)
    if artifact is None:
        return _blocked(dep, "ArtifactNotFound", f"Artifact {art_name} not found in namespace {ns}")
    if (artifact.get("spec") or {}).get("lifecycle") != "Registered":
        return _blocked(dep, "ArtifactNotRegistered",
                        f"Artifact {art_name} is Draft: register it first (kubectl patch artifact.kiln.dev "
                        f"{art_name} --type merge -p '{{\"spec\":{{\"lifecycle\":\"Registered\"}}}}')")
    digest = spec_digest(artifact["spec"])
    pinned = status.get("artifact") or {}
    if pinned.get("name") == art_name and pinned.get("specDigest") not in (None, digest):
        return _blocked(dep, "DigestMismatch", f"Artifact {art_name} now hashes to {digest[:19]}, "
                        f"not the pinned {pinned['specDigest'][:19]}: refusing to roll out")
    replicas = int(spec.get("replicas", 1))
    importance = str(spec.get("importance", "Moderate"))

    # The audit trail, and an Event for each transition.
    now = cond.now()
    new_entries = history_entries(dep, art_name, digest, replicas, now)
    for e in new_entries:
        kopf.info(dep, reason=e["action"], message=f"{e['message']} by {e['actor']}")
    history = ((status.get("history") or []) + new_entries)[-MAX_HISTORY:]

    owner = b.owner_reference(dep, "Deployment")
    desired = b.apps_deployment(name, art_name, artifact["spec"]["containers"], digest, replicas, importance)
    desired["metadata"]["ownerReferences"] = [owner]
    apps = _ensure_apps_deployment(dep, desired, logger)
    _ensure_child(dep, b.service(name, art_name, "deployment", b.deployment_selector(name),
                                 artifact["spec"]["containers"]), kube.core().read_namespaced_service,
                  kube.core().create_namespaced_service, kube.core().patch_namespaced_service,
                  kube.core().delete_namespaced_service, "Service", name)
    pdb = spec.get("podDisruptionBudget")
    _ensure_child(dep, b.pod_disruption_budget(name, art_name, pdb["minAvailable"]) if pdb else None,
                  kube.policy().read_namespaced_pod_disruption_budget,
                  kube.policy().create_namespaced_pod_disruption_budget,
                  kube.policy().patch_namespaced_pod_disruption_budget,
                  kube.policy().delete_namespaced_pod_disruption_budget, "PodDisruptionBudget", name)

    conditions, ready = rollout_conditions(apps, replicas, gen)
    kube.write_status("deployments", dep, {"artifact": {"name": art_name, "specDigest": digest}, "replicas": replicas,
                        "readyReplicas": ready, "history": history}, conditions)


def _ensure_apps_deployment(dep: Body, desired: Body, logger: logging.Logger) -> Body | None:
    """Create the apps/v1 Deployment, roll it to a new desired state, or revert a hand edit of it.

    The desired state's hash is kept in an annotation: a live object that differs from a desired
    state it already carries was edited by hand."""
    ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
    api, to_dict = kube.apps(), kube.api_client().sanitize_for_serialization
    want = b.spec_hash(desired["spec"])
    desired["metadata"]["annotations"][b.A_DESIRED] = want
    try:
        live = to_dict(api.read_namespaced_deployment(name, ns))
    except ApiException as e:
        if e.status != 404:
            raise
        try:
            return dict(to_dict(api.create_namespaced_deployment(ns, desired)))
        except ApiException as e2:
            if e2.status == 409:
                raise kopf.TemporaryError("apps/v1 Deployment appeared meanwhile", delay=1) from e2
            raise
    if not any(r.get("uid") == dep["metadata"]["uid"] for r in live["metadata"].get("ownerReferences") or []):
        raise kube.ChildConflict(f"apps/v1 Deployment {name} exists and is not owned by this Deployment")
    had = (live["metadata"].get("annotations") or {}).get(b.A_DESIRED)
    changed = b.drift(desired["spec"], live["spec"])
    if had == want and not changed:
        return dict(live)
    live["spec"] = desired["spec"]
    for key in ("labels", "annotations"):
        live["metadata"][key] = {**(live["metadata"].get(key) or {}), **desired["metadata"][key]}
    updated = to_dict(api.replace_namespaced_deployment(name, ns, live))
    if had == want:
        kopf.warn(dep, reason="DriftReverted",
                  message=f"reverted a hand edit of apps/v1 Deployment {name}: {', '.join(changed[:5])}")
        logger.warning(f"reverted drift of apps/v1 Deployment {name}: {changed}")
    return dict(updated)


def _ensure_child(dep: Body, desired: Body | None, read: Any, create: Any, patch: Any, delete: Any,
                  kind: str, name: str) -> None:
    ns, uid = dep["metadata"]["namespace"], dep["metadata"]["uid"]
    try:
        live = read(name, ns)
    except ApiException as e:
        if e.status != 404:
            raise
        live = None
    owned = live is not None and any(r.uid == uid for r in live.metadata.owner_references or [])
    if desired is None:
        if owned:
            kube.ignore(404)(delete)(name, ns)
        return
    desired["metadata"]["ownerReferences"] = [b.owner_reference(dep, "Deployment")]
    if live is None:
        kube.ignore(409)(create)(ns, desired)
    elif not owned:
        raise kube.ChildConflict(f"{kind} {name} exists and is not owned by this Deployment")
    elif b.drift(desired["spec"], kube.api_client().sanitize_for_serialization(live)["spec"]):
        patch(name, ns, {"spec": desired["spec"]})


# --- triggers ----------------------------------------------------------------------------------


@kopf.on.resume(*DEPLOYMENTS)
@kopf.on.create(*DEPLOYMENTS)
@kopf.on.update(*DEPLOYMENTS)
def deployment_changed(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    reconcile(namespace, name, logger)


@kopf.on.event("apps", "v1", "deployments", labels={b.L_DEPLOYMENT: kopf.PRESENT})
def apps_deployment_event(namespace: str, labels: dict[str, str], type: str | None, logger: logging.Logger,
                          **_: Any) -> None:
    """Rollout progress updates the conditions; a hand edit is reverted."""
    if type is None:
        return
    try:
        reconcile(namespace, labels[b.L_DEPLOYMENT], logger)
    except ApiException as e:
        logger.warning(f"reconciling Deployment {labels[b.L_DEPLOYMENT]} failed: {e.reason}")
