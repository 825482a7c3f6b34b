"""Governed Deployment controller (deployments.kiln.dev): a Registered Artifact, pinned by digest, run as
an apps/v1 Deployment plus a Service (and an optional PodDisruptionBudget), with an audit trail.

:func:`plan` decides (pure): whether the change may roll out, the audit entries, the desired children;
:func:`reconcile` converges the children and writes the status, :func:`rollout_status` reading the
apps/v1 Deployment's progress.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
import pydantic
from kubernetes.client.exceptions import ApiException

from kiln import kube, metrics, tree
from kiln.api.models import (
    MAX_HISTORY,
    ROLLOUT_ACTIONS,
    Artifact,
    Condition,
    Deployment,
    DeploymentArtifactStatus,
    DeploymentStatus,
    HistoryAction,
    HistoryEntry,
    Lifecycle,
    ObjectMeta,
    Workload,
    problems,
    register_command,
    status_of,
)
from kiln.controllers import builders as b
from kiln.controllers import runtime
from kiln.controllers.cache import artifact_view
from kiln.controllers.conditions import APPROVED, AVAILABLE, PROGRESSING, READY, condition, get, merge, now
from kiln.controllers.governance import approvals_of, gate, policy_of
from kiln.names import (
    A_CHANGED_BY,
    A_DESIRED,
    APPROVALS,
    ARTIFACTS,
    DEPLOYMENTS,
    GROUP,
    L_DEPLOYMENT,
    L_OWNER_UID,
    VERSION,
    WORKLOADS,
)

Body = dict[str, Any]


@dataclass
class Plan:
    """A rollout (``blocked`` is None) or the reason it may not happen (then nothing is touched)."""

    blocked: tuple[str, str] | None = None  # (reason, message)
    artifact: str = ""
    uid: str = ""
    digest: str = ""
    collection: str | None = None
    version: int | None = None
    replicas: int = 0
    history: list[HistoryEntry] = field(default_factory=list)  # the whole trail, new entries last
    new_entries: list[HistoryEntry] = field(default_factory=list)
    apps: Body = field(default_factory=dict)  # the apps/v1 Deployment
    service: Body | None = None
    pdb: Body | None = None


def _labelled(name: str | None, version: int | None) -> str:
    return f"{name} (v{version})" if version else str(name)


def history_entries(dep: Deployment, art_name: str, uid: str, digest: str, replicas: int, at: str,
                    version: int | None = None) -> list[HistoryEntry]:
    """What changed since the last rollout on record: creation, an artifact switch (another name, or
    another object under the same name) or a rollback (to an Artifact it ran before), a scale, an
    importance change (pure)."""
    rollouts = [h for h in dep.status.history or [] if h.action in ROLLOUT_ACTIONS]
    actor = dep.metadata.annotations.get(A_CHANGED_BY) or "unknown"
    importance = dep.spec.importance

    def entry(action: HistoryAction, message: str, **extra: Any) -> HistoryEntry:
        return HistoryEntry(time=at, actor=actor, artifact=art_name, artifact_uid=uid or None, digest=digest,
                            version=version, replicas=replicas, importance=importance,
                            generation=dep.metadata.generation, action=action, message=message, **extra)

    if not rollouts:
        return [entry(HistoryAction.CREATED, f"created with Artifact {_labelled(art_name, version)} ({digest[:19]}), "
                                             f"{replicas} replica(s), importance {importance}")]
    last = rollouts[-1]
    out = []
    if last.artifact != art_name or last.digest != digest or last.artifact_uid not in (None, uid):
        earlier = earlier_object(dep, art_name, uid)
        switch = f"Artifact {_labelled(last.artifact, last.version)} -> {_labelled(art_name, version)} ({digest[:19]})"
        ran_before = any(h.digest == digest and h.artifact_uid in (None, uid) and h.artifact == art_name
                         for h in rollouts[:-1])
        if ran_before:
            out.append(entry(HistoryAction.ROLLED_BACK, f"rolled back: {switch}", from_version=last.version))
        else:
            out.append(entry(HistoryAction.ARTIFACT_SWITCHED, switch
                             + (f", a new object under the name of an earlier one (uid {earlier} -> {uid})"
                                if earlier else ""), from_version=last.version))
    if last.replicas != replicas:
        out.append(entry(HistoryAction.SCALED, f"replicas {last.replicas} -> {replicas}"))
    if last.importance is not None and last.importance != importance:
        out.append(entry(HistoryAction.IMPORTANCE_CHANGED, f"importance {last.importance} -> {importance}"))
    return out


def earlier_object(dep: Deployment, art_name: str, uid: str) -> str | None:
    """The uid of another object named ``art_name`` that this Deployment ran before (its pin or its
    audit trail), if any: the name has been reused (pure)."""
    pinned = dep.status.artifact
    seen = [(pinned.name, pinned.uid)] if pinned is not None else []
    seen += [(h.artifact, h.artifact_uid) for h in reversed(dep.status.history or [])]
    # The latest record of the name decides: once the new object has run here, it is the one.
    latest = next((u for n, u in seen if n == art_name and u is not None), None)
    return latest if latest not in (None, uid) else None


def plan(dep: Deployment, art_name: str | None, artifact: Artifact | None, at: str) -> Plan:
    """The decision table of a governed Deployment (pure). ``art_name``: the Artifact its spec names
    (None: its workloadRef names a Workload that does not exist); ``artifact``: that Artifact, if it exists.

    Content is identified by object and digest, not by name: the pin holds for the object it was made
    with (its uid), and an object that reuses the name of one this Deployment ran (deleted and recreated
    with other content) runs only once promoted explicitly, by its uid in ``spec.artifactRef.uid``."""
    meta, spec = dep.metadata, dep.spec
    if art_name is None:
        return Plan(("WorkloadNotFound", f"Workload {spec.workload_ref.name if spec.workload_ref else ''} not found"))
    if artifact is None:
        what = spec.artifact_ref.describe() if spec.artifact_ref else f"Artifact {art_name}"
        return Plan(("ArtifactNotFound", f"{what} not found in namespace {meta.namespace}"))
    if not artifact.spec.registered:
        return Plan(("ArtifactNotRegistered",
                     f"Artifact {art_name} is {Lifecycle.DRAFT}: register it first ({register_command(art_name)})"))
    view = artifact_view(artifact.to_dict())
    digest, uid, version = view.registered_digest, artifact.metadata.uid, view.version
    wanted_uid = spec.artifact_ref.uid if spec.artifact_ref else None
    if wanted_uid is not None and wanted_uid != uid:
        return Plan(("ArtifactUidMismatch", f"Artifact {art_name} is the object {uid}, not {wanted_uid} "
                                            "(spec.artifactRef.uid): refusing to roll out"))
    reused = earlier_object(dep, art_name, uid)
    if reused is not None and wanted_uid != uid:
        return Plan(("ArtifactReplaced", f"Artifact {art_name} is a new object (uid {uid}) under the name of the one "
                                         f"this Deployment ran (uid {reused}): production keeps running what it "
                                         f"runs; to promote the new object set spec.artifactRef.uid to {uid}"))
    pinned = dep.status.artifact
    if pinned is not None and pinned.name == art_name and pinned.uid in (None, uid) \
            and pinned.spec_digest not in (None, digest):
        return Plan(("DigestMismatch", f"Artifact {art_name} now hashes to {digest[:19]}, "
                                       f"not the pinned {(pinned.spec_digest or '')[:19]}: refusing to roll out"))
    new_entries = history_entries(dep, art_name, uid, digest, spec.replicas, at, version)
    containers = artifact.spec.containers
    pdb = spec.pod_disruption_budget
    return Plan(
        artifact=art_name, uid=uid, digest=digest, collection=view.collection, version=version,
        replicas=spec.replicas, new_entries=new_entries,
        history=((dep.status.history or []) + new_entries)[-MAX_HISTORY:],
        apps=b.apps_deployment(meta.name, meta.uid, art_name, containers, digest, spec.replicas,
                               spec.importance.value, images={i.container: i.pinned for i in view.images or ()},
                               pull_secrets=[s.name for s in artifact.spec.image_pull_secrets or []],
                               revision_history_limit=spec.revision_history_limit),
        service=b.service(meta.name, art_name, "deployment", b.deployment_pods(meta.name, meta.uid), containers),
        pdb=b.pod_disruption_budget(meta.name, meta.uid, art_name, pdb.min_available) if pdb else None)


def with_approved(conditions: list[Condition], old: list[Condition] | None, approved: Condition | None
                  ) -> list[Condition]:
    """The conditions and the Approved one: the given one, or the one on record (pure)."""
    keep = approved or get(old, APPROVED)
    return conditions + ([keep] if keep is not None else [])


def blocked_status(dep: Deployment, reason: str, msg: str, at: str, approved: Condition | None = None,
                   entries: Sequence[HistoryEntry] = ()) -> DeploymentStatus:
    """A problem reported (or a change waiting for approvals, ``entries`` its governance record), what
    runs kept as it was: production keeps its last good state (pure)."""
    old, gen = dep.status, dep.metadata.generation
    return DeploymentStatus(
        observed_generation=gen, artifact=old.artifact, replicas=old.replicas, ready_replicas=old.ready_replicas,
        endpoints=old.endpoints, history=((old.history or []) + list(entries))[-MAX_HISTORY:] or None,
        conditions=merge(old.conditions, with_approved([
            condition(READY, False, reason, msg, gen), condition(PROGRESSING, False, reason, msg, gen),
            get(old.conditions, AVAILABLE) or condition(AVAILABLE, False, reason, msg, gen)], old.conditions,
            approved), at))


def rollout_conditions(apps: Body | None, replicas: int, gen: int | None) -> tuple[list[Condition], int]:
    """Ready / Progressing / Available from the apps/v1 Deployment's status, kstatus-style (pure)."""
    st = (apps or {}).get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    if apps is None:
        msg = "creating the apps/v1 Deployment"
        return [condition(READY, False, "Creating", msg, gen), condition(PROGRESSING, True, "Creating", msg, gen),
                condition(AVAILABLE, False, "Creating", msg, gen)], 0
    observed = st.get("observedGeneration") == apps["metadata"].get("generation")
    updated = int(st.get("updatedReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    total = int(st.get("replicas") or 0)
    apps_conds = {c["type"]: c for c in st.get("conditions") or []}
    stalled = (apps_conds.get("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded"
    done = observed and updated == replicas and ready == replicas and available == replicas and total == replicas
    msg = f"{ready}/{replicas} ready, {updated} updated, {available} available"
    reason = "RolloutComplete" if done else ("ProgressDeadlineExceeded" if stalled else "RollingOut")
    avail = apps_conds.get("Available") or {}
    return [
        condition(READY, done, reason, msg, gen),
        condition(PROGRESSING, not done and not stalled, reason, msg, gen),
        condition(AVAILABLE, avail.get("status") == "True" or (replicas == 0 and observed),
                  str(avail.get("reason") or "NoPods"), str(avail.get("message") or msg), gen),
    ], ready


def rollout_status(dep: Deployment, todo: Plan, apps: Body | None, at: str,
                   approved: Condition | None = None) -> DeploymentStatus:
    conditions, ready = rollout_conditions(apps, todo.replicas, dep.metadata.generation)
    return DeploymentStatus(
        observed_generation=dep.metadata.generation, replicas=todo.replicas, ready_replicas=ready,
        endpoints=b.endpoints(todo.service, dep.metadata.namespace),
        artifact=DeploymentArtifactStatus(name=todo.artifact, uid=todo.uid or None, collection=todo.collection,
                                          version=todo.version, spec_digest=todo.digest),
        history=todo.history,
        conditions=merge(dep.status.conditions, with_approved(conditions, dep.status.conditions, approved), at))


# --- applying a plan ---------------------------------------------------------------------------------


def reconcile(rt: runtime.Runtime, namespace: str, name: str, logger: kopf.Logger) -> None:
    with metrics.reconciling("deployment"), rt.locks.of(DEPLOYMENTS, namespace, name):
        raw = kube.get_kiln(DEPLOYMENTS, namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            return
        at = now()
        try:
            dep = Deployment.model_validate(raw)
        except pydantic.ValidationError as e:  # admitted by an older schema, say: reported, nothing touched
            meta = ObjectMeta.model_validate(raw["metadata"])
            old = status_of(DeploymentStatus, raw)
            kube.write_status(DEPLOYMENTS, meta, old, old.model_copy(update={"conditions": merge(old.conditions, [
                condition(READY, False, "InvalidSpec", problems(e), meta.generation)], at)}))
            return
        todo = plan(dep, *_artifact_of(dep), at)
        approved = None
        waiting = get(dep.status.conditions, APPROVED)
        if todo.blocked is None and not todo.new_entries and waiting is not None and waiting.status != "True":
            # The spec went back to what production runs: nothing waits any more.
            approved = condition(APPROVED, True, "NoPendingChange", "production runs the spec: no change waits "
                                 "for approval", dep.metadata.generation)
        if todo.blocked is None and todo.new_entries:
            verdict = gate(dep, todo.new_entries, policy_of(namespace), lambda: approvals_of(namespace), at)
            approved = verdict.approved
            for entry in verdict.entries:
                runtime.event(raw, entry.action, f"{entry.message} by {entry.actor}",
                              warning=entry.action in (HistoryAction.REJECTED, HistoryAction.EXPIRED))
            if not verdict.may_roll_out:  # production keeps running the last approved state
                kube.write_status(DEPLOYMENTS, dep.metadata, dep.status, blocked_status(
                    dep, approved.reason or "", approved.message or "", at, approved, verdict.entries))
                return
            todo.new_entries = verdict.entries + todo.new_entries
            todo.history = ((dep.status.history or []) + todo.new_entries)[-MAX_HISTORY:]
            # The audit record comes first: no rollout happens without its entry, credited to whoever
            # made this change, even when a child write fails below.
            recorded = rollout_status(dep, todo, None, at, approved)
            msg = "; ".join(e.message or e.action for e in todo.new_entries if e.action in ROLLOUT_ACTIONS)
            gen = dep.metadata.generation
            recorded.conditions = merge(dep.status.conditions, with_approved([
                condition(READY, False, "RollingOut", msg, gen), condition(PROGRESSING, True, "RollingOut", msg, gen),
                get(dep.status.conditions, AVAILABLE) or condition(AVAILABLE, False, "RollingOut", msg, gen)],
                dep.status.conditions, approved), at)
            kube.write_status(DEPLOYMENTS, dep.metadata, dep.status, recorded)
            dep = dep.model_copy(update={"status": recorded})
            for entry in todo.new_entries:
                if entry.action in ROLLOUT_ACTIONS:
                    runtime.event(raw, entry.action, f"{entry.message} by {entry.actor}")
        apps = None
        if todo.blocked is None:
            try:
                apps = _converge(raw, dep, todo, logger)
            except kube.ChildConflict as e:
                todo.blocked = ("NameConflict", str(e))
            except ApiException as e:
                if e.status not in (400, 403, 404, 422):
                    raise  # the API server's trouble: retried
                # A child the API refuses (a value the CRD's schema admits but its own kind does not):
                # reported, production kept as it is, retried on the next change.
                todo.blocked = ("ChildRejected", kube.reason(e))
        if todo.blocked is not None:
            runtime.event(raw, *todo.blocked, warning=True)
            kube.write_status(DEPLOYMENTS, dep.metadata, dep.status, blocked_status(dep, *todo.blocked, at))
            return
        kube.write_status(DEPLOYMENTS, dep.metadata, dep.status, rollout_status(dep, todo, apps, at, approved))


def _artifact_of(dep: Deployment) -> tuple[str | None, Artifact | None]:
    """The Artifact a Deployment names, and the Artifact itself (None when either is missing)."""
    ns, ref = dep.metadata.namespace, dep.spec.artifact_ref
    if ref is not None and ref.name is None:  # by collection and version
        body = kube.find_artifact(ns, None, ref.collection, ref.version)
        art_name = body["metadata"]["name"] if body is not None else ref.describe()
    else:
        if ref is not None and ref.name is not None:
            art_name = ref.name
        else:  # workloadRef alone, admitted while the webhook was unavailable
            wl = kube.get_kiln(WORKLOADS, ns, dep.spec.workload_ref.name if dep.spec.workload_ref else "")
            if wl is None:
                return None, None
            art_name = Workload.model_validate(wl).artifact_name
        body = kube.get_kiln(ARTIFACTS, ns, art_name)
    try:
        return art_name, None if body is None else Artifact.model_validate(body)
    except pydantic.ValidationError:
        return art_name, None


def _apps_children() -> kube.Children:
    def update(name: str, ns: str, desired: Body, live: Body) -> Any:
        """A replace (with the live object's resourceVersion): keys added by hand go too."""
        live["spec"] = desired["spec"]
        for key in ("labels", "annotations"):
            live["metadata"][key] = {**(live["metadata"].get(key) or {}), **desired["metadata"][key]}
        return kube.apps().replace_namespaced_deployment(name, ns, live)

    api = kube.apps()
    return kube.Children("apps/v1 Deployment", api.read_namespaced_deployment, api.create_namespaced_deployment,
                         update, api.delete_namespaced_deployment)


def _converge(raw: Body, dep: Deployment, todo: Plan, logger: kopf.Logger) -> Body | None:
    """The children onto the plan; returns the apps/v1 Deployment as it is now. The desired state's hash
    is kept in an annotation of the apps/v1 Deployment: a live one that differs from a desired state it
    already carries was edited by hand (the edit is reverted, with an Event)."""
    meta, name = dep.metadata, dep.metadata.name
    owner = b.owner_reference(meta, "Deployment")
    for child in (todo.apps, todo.service, todo.pdb):
        if child is not None:
            child["metadata"]["ownerReferences"] = [owner]
    want = b.spec_hash(todo.apps["spec"])
    todo.apps["metadata"]["annotations"][A_DESIRED] = want
    apps_children = _apps_children()
    live = kube.read(apps_children, name, meta.namespace)
    if live is not None:
        had = (live["metadata"].get("annotations") or {}).get(A_DESIRED)
        edited = tree.drift(todo.apps["spec"], live["spec"])
        if had == want and edited and kube.owned_by(live, meta.uid):
            metrics.DRIFT_REVERTS.labels("Deployment").inc()
            runtime.event(raw, "DriftReverted", f"reverted a hand edit of apps/v1 Deployment {name}: "
                          f"{', '.join(edited[:5])}", warning=True)
            logger.warning(f"reverted drift of apps/v1 Deployment {name}: {edited}")
    apps = kube.ensure_child(apps_children, meta, "Deployment", name, todo.apps, live, differs=lambda d, lv: (
        (lv["metadata"].get("annotations") or {}).get(A_DESIRED) != want or bool(tree.drift(d["spec"], lv["spec"]))))
    pdbs = kube.Children.patched("PodDisruptionBudget", kube.policy(), "pod_disruption_budget")
    for kind, children, desired in (("Service", kube.Children.patched("Service", kube.core(), "service"), todo.service),
                                    ("PodDisruptionBudget", pdbs, todo.pdb)):
        child = kube.read(children, name, meta.namespace)
        if desired is not None and child is not None and live is not None and not _pods_carry_owner_uid(live):
            # Made by an earlier Kiln, selecting pods by name only: it selects by uid too once every pod
            # has the uid label (this rollout adds it), so that no request meanwhile finds no pod.
            selector = (child["spec"].get("selector") or {})
            if L_OWNER_UID not in (selector if kind == "Service" else selector.get("matchLabels") or {}):
                desired["spec"]["selector"] = selector
        kube.ensure_child(children, meta, "Deployment", name, desired, child)
    return apps


def _pods_carry_owner_uid(apps: Body) -> bool:
    """Whether every pod of a live apps/v1 Deployment has the owner-uid label: its template has it and
    its rollout is complete."""
    st, spec = apps.get("status") or {}, apps["spec"]
    labelled = L_OWNER_UID in ((spec.get("template") or {}).get("metadata") or {}).get("labels", {})
    return labelled and st.get("observedGeneration") == apps["metadata"].get("generation") \
        and st.get("updatedReplicas", 0) == st.get("replicas", 0)


# --- triggers ----------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, DEPLOYMENTS)
@kopf.on.create(GROUP, VERSION, DEPLOYMENTS)
@kopf.on.update(GROUP, VERSION, DEPLOYMENTS)
def deployment_changed(namespace: str | None, name: str, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    reconcile(runtime.of(memo), str(namespace), name, logger)


@kopf.on.event("apps", "v1", "deployments", labels={L_DEPLOYMENT: kopf.PRESENT})
def apps_deployment_event(namespace: str | None, labels: Mapping[str, str], type: str | None, memo: Any,
                          logger: kopf.Logger, **_: Any) -> None:
    """Rollout progress updates the conditions; a hand edit is reverted."""
    if type is None:
        return
    try:
        reconcile(runtime.of(memo), str(namespace), labels[L_DEPLOYMENT], logger)
    except ApiException as e:
        logger.warning(f"reconciling Deployment {labels[L_DEPLOYMENT]} failed: {e.reason}")


@kopf.on.create(GROUP, VERSION, APPROVALS)
def approval_created(namespace: str | None, spec: kopf.Spec, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """An approval or a rejection decides the change its Deployment waits for."""
    name = str((spec.get("deploymentRef") or {}).get("name") or "")
    if name:
        reconcile(runtime.of(memo), str(namespace), name, logger)


def _awaiting(status: kopf.Status, **_: Any) -> bool:
    return any(c.get("type") == APPROVED and c.get("reason") == "AwaitingApproval"
               for c in status.get("conditions") or [])


@kopf.timer(GROUP, VERSION, DEPLOYMENTS, interval=10, when=_awaiting)
def awaiting_approval(namespace: str | None, name: str, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """A change waiting for approvals expires after its policy's period."""
    reconcile(runtime.of(memo), str(namespace), name, logger)
