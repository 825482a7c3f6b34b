"""Workload controller: one level-triggered reconcile, called from every trigger.

Triggers: the Workload's own create/update/resume, events of its pods and Service, and changes of the
Artifact it runs. A reconcile reads the Workload (or takes the body kopf just received) and what the
indexes know of its Artifact, pods and Service; :func:`plan` decides what should happen (pure: the
pods to delete and create, the Service, the status, the events) and :func:`reconcile` does it. A
reconcile that finds nothing to change writes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import kopf
import pydantic
from kubernetes.client.exceptions import ApiException

from kiln import kube, metrics, names
from kiln.api import models
from kiln.controllers import builders as b
from kiln.controllers import runtime
from kiln.controllers.cache import ArtifactView, PodView, ServiceView, artifact_view, service_ports
from kiln.controllers.conditions import AVAILABLE, PROGRESSING, READY, UPDATE_AVAILABLE, condition, merge, now

Body = dict[str, Any]


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass
class Plan:
    """What a reconcile does, decided from what it observes."""

    status: models.WorkloadStatus
    delete: list[str] = field(default_factory=list)  # pods, deleted gracefully
    delete_now: list[str] = field(default_factory=list)  # failed pods, deleted at once to be replaced
    create: list[Body] = field(default_factory=list)  # pods
    service: Body | None = None  # the desired development Service (None: there should be none)
    converge_service: bool = False  # False: leave the Service as it is
    events: list[Event] = field(default_factory=list)
    draft_restart: bool = False  # the pods restart because their Draft Artifact changed
    # A first visit whose pods are just made and waiting to start: its status ("Starting") can wait a
    # moment, and is usually overtaken by "Running" (one status write instead of two).
    status_can_wait: bool = False


@dataclass(frozen=True)
class Hold:
    """A Manual Workload whose Draft Artifact changed: its pods stay on the spec they run (``digest``);
    a pod it needs again is made like ``template``, one of its live pods."""

    digest: str
    template: Body


def plan(wl: models.Workload, art: ArtifactView | None, pods: list[PodView], *, at: str,
         problem: tuple[str, str] | None = None, hold: Hold | None = None) -> Plan:
    """The decision table of a Workload (pure): from the Workload, its Artifact as indexed (None: not
    found) and its pods, what to do and what its status says. ``problem``: a child could not be
    converged (reason, message), which the status then reports; ``hold``: the pods wait for a restart."""
    meta, spec, old = wl.metadata, wl.spec, wl.status
    gen, art_name = meta.generation, wl.artifact_name
    manual = spec.update_policy == models.UpdatePolicy.MANUAL

    def conds(ready: tuple[bool, str, str], available: tuple[bool, str], progressing: tuple[bool, str, str]) -> Any:
        update = []
        if manual and art is not None:
            update = [condition(UPDATE_AVAILABLE, True, "ArtifactChanged", (
                f"Artifact {art_name} changed to {art.digest[:19]}; the pods run {hold.digest[:19]} until a restart "
                f"(kubectl kiln restart workload {meta.name})"), gen) if hold else
                condition(UPDATE_AVAILABLE, False, "UpToDate", "the pods run the Artifact's spec", gen)]
        return merge(old.conditions, [condition(READY, *ready, gen), condition(AVAILABLE, *available, ready[2], gen),
                                      condition(PROGRESSING, *progressing, gen), *update], at)

    # Its pods are those it controls: a pod that only carries its label is not one (never deleted,
    # never counted); one with the name of a pod it needs is a conflict, reported.
    foreign = [p for p in pods if p.owner != meta.uid]
    pods = [p for p in pods if p.owner == meta.uid]
    if art is None:
        reason, msg = problem or ("ArtifactNotFound", f"Artifact {art_name} not found in namespace "
                                                      f"{meta.namespace}; the workload starts once it exists")
        return Plan(models.WorkloadStatus(
            observed_generation=gen, state=models.WorkloadPhase.PENDING, replicas=0, ready_replicas=0,
            artifact=models.WorkloadArtifactStatus(name=art_name),
            conditions=conds((False, reason, msg), (False, reason), (False, reason, msg))),
            delete=[p.name for p in pods])
    if art.spec is None:
        msg = f"Artifact {art_name} is invalid: {art.problem}"
        return Plan(old.model_copy(update={"observed_generation": gen, "conditions": conds(
            (False, "InvalidArtifact", msg), (bool(pods), "InvalidArtifact"), (False, "InvalidArtifact", msg))}))

    restarted_at = meta.annotations.get(names.A_RESTARTED_AT)
    digest = hold.digest if hold else art.digest
    rev = b.revision(digest, restarted_at)
    running = spec.state != models.DesiredState.STOPPED
    replicas = spec.replicas if running else 0
    wanted = {b.workload_pod_name(meta.name, rev, i): i for i in range(replicas)}
    taken = [p.name for p in foreign if p.name in wanted]
    if taken and not problem:
        problem = ("NameConflict", f"Pod {', '.join(taken)} exists and is not owned by this Workload")
    current = {p.name: p for p in pods if p.name in wanted and not p.deleting}
    stale = [p for p in pods if p.name not in wanted and not p.deleting]
    failed = [p for p in current.values() if p.phase in ("Failed", "Succeeded")]
    out = Plan(models.WorkloadStatus(), delete=[p.name for p in stale], delete_now=[p.name for p in failed],
               converge_service=True)
    old_revision = [p for p in stale if p.revision != rev]
    if old_revision and running:
        same_spec = any(p.digest == b.digest_label(art.digest) for p in old_revision)
        why = (f"restart requested at {restarted_at}" if same_spec
               else f"Artifact {art_name} changed to {art.digest[:19]}")
        out.events.append(Event("Restarted", f"restarting {len(old_revision)} pod(s): {why}"))
        out.draft_restart = not same_spec
    elif stale and not running and old.state != models.WorkloadPhase.STOPPED:
        out.events.append(Event("Stopped", f"stopping: deleting {len(stale)} pod(s)"))
    if failed:
        out.events.append(Event("PodReplaced", f"replacing failed pod(s) {', '.join(p.name for p in failed)}",
                                warning=True))

    owner = b.owner_reference(meta, "Workload")
    for pod_name, i in wanted.items():
        if pod_name in taken:
            continue
        if pod_name not in current or current[pod_name] in failed:
            pod = (b.pod_like(hold.template, pod_name, i) if hold else
                   b.workload_pod(meta.name, art_name, art.spec.containers, art.digest, rev, i,
                                  [s.name for s in art.spec.image_pull_secrets or []]))
            pod["metadata"]["ownerReferences"] = [owner]
            out.create.append(pod)
    if out.create and not old.observed_generation:  # the CRD defaults it to 0: a first visit
        out.events.append(Event("Created", f"created {len(out.create)} pod(s) running Artifact {art_name}"))
    elif out.create and running and old.state == models.WorkloadPhase.STOPPED:
        out.events.append(Event("Started", f"started {len(out.create)} pod(s)"))
    service = b.service(b.workload_service_name(meta.name), art_name, "workload", b.workload_selector(meta.name),
                        art.spec.containers if running else [])
    if service is not None:
        service["metadata"]["ownerReferences"] = [owner]
    out.service = service

    ready = sum(1 for p in current.values() if p.ready and p not in failed)
    if not running:
        state, ok, reason = models.WorkloadPhase.STOPPED, not pods, "Stopped" if not pods else "Stopping"
        msg = "stopped as requested" if ok else f"stopping: {len(pods)} pod(s) left"
    elif ready == replicas:
        state, ok, reason, msg = models.WorkloadPhase.RUNNING, True, "PodsReady", f"{ready}/{replicas} pods ready"
    elif broken := [f"pod {p.name} {p.broken}" for p in current.values() if p.broken]:
        state, ok, reason, msg = models.WorkloadPhase.FAILED, False, "PodsFailing", "; ".join(broken)
    elif current or out.create:
        state, ok, reason, msg = models.WorkloadPhase.STARTING, False, "PodsNotReady", f"{ready}/{replicas} pods ready"
    else:
        state, ok, reason, msg = models.WorkloadPhase.PENDING, False, "PodsCreating", f"creating {replicas} pod(s)"
    if problem:
        ok, (reason, msg) = False, problem
    done = ok and not stale and len(current) == replicas
    out.status_can_wait = (not old.observed_generation and state == models.WorkloadPhase.STARTING and not problem
                           and all(p.quiet for p in current.values()))
    out.status = models.WorkloadStatus(
        observed_generation=gen, state=state, replicas=replicas, ready_replicas=ready,
        artifact=models.WorkloadArtifactStatus(name=art_name, uid=art.uid or None, lifecycle=art.spec.lifecycle,
                                               spec_digest=digest),
        restarted_at=restarted_at, endpoints=b.endpoints(service, meta.namespace),
        conditions=conds(
            (ok, reason, msg),
            (running and ready >= max(replicas, 1),
             "Stopped" if not running else ("MinimumReplicasAvailable" if ready else "NoReadyPods")),
            (not done, "Converging" if not done else "Converged",
             msg if not done else f"revision {rev} is rolled out")))
    return out


# --- applying a plan ---------------------------------------------------------------------------------


def reconcile(rt: runtime.Runtime, namespace: str, name: str, logger: kopf.Logger,
              body: Body | None = None, hold_status: bool = True) -> None:
    """``hold_status``: a first visit's "Starting" may wait (:attr:`Plan.status_can_wait`); False for the
    reconcile that comes when that wait is over."""
    try:
        with metrics.reconciling("workload"), rt.locks.of(names.WORKLOADS, namespace, name):
            _reconcile(rt, namespace, name, logger, body, hold_status)
    except ApiException as e:
        if not kube.gone_with_namespace(e):  # else the Workload goes with its namespace
            raise


def _reconcile(rt: runtime.Runtime, ns: str, name: str, logger: kopf.Logger, body: Body | None,
               hold_status: bool) -> None:
    # The Workload as its last watch event brought it (its own handlers pass the body kopf has just
    # received); read only when none has come yet.
    seen = rt.workloads.get((ns, name)) if body is None else None
    raw = body if body is not None else json.loads(seen) if seen else kube.get_kiln(names.WORKLOADS, ns, name)
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        return  # garbage collection removes the pods and the Service
    try:
        wl = models.Workload.model_validate(raw)
    except pydantic.ValidationError as e:  # admitted by an older schema, say: reported, nothing touched
        meta = models.ObjectMeta.model_validate(raw["metadata"])
        old = models.status_of(models.WorkloadStatus, raw)
        kube.write_status(names.WORKLOADS, meta, old, old.model_copy(update={"conditions": merge(old.conditions, [
            condition(READY, False, "InvalidSpec", models.problems(e), meta.generation)])}))
        return
    key = (ns, name)
    art = rt.indexes.artifacts.one((ns, wl.artifact_name))
    conflict = None
    if wl.spec.artifact is not None:
        made = False
        if art is None:
            art, made = _create_inline_artifact(raw, wl, logger)
        if art is not None and not made and not _made_for(wl, raw, art):
            conflict = ("ArtifactConflict", f"Artifact {wl.artifact_name} exists and was not made from this "
                                            "Workload's spec.artifact: nothing runs; delete that Artifact or "
                                            "rename the Workload")
            art = None
    at = now()
    hold = _hold(wl, art, rt.indexes.pods.get(key))
    todo = plan(wl, art, rt.indexes.pods.get(key), at=at, problem=conflict, hold=hold)
    for pod in todo.delete:
        _delete_pod(ns, pod, grace=None)
    for pod in todo.delete_now:
        _delete_pod(ns, pod, grace=0)
    taken = [created["metadata"]["name"] for created in todo.create if not _create_pod(ns, created, wl.metadata.uid)]
    problem = ("NameConflict", f"Pod {', '.join(taken)} exists and is not owned by this Workload") if taken else None
    if todo.converge_service:
        problem = _converge_service(wl, todo, rt.indexes.services.one(key)) or problem
    if problem:
        runtime.event(raw, *problem, warning=True)
        todo = replace(todo, status=plan(wl, art, rt.indexes.pods.get(key), at=at, problem=problem, hold=hold).status)
    elif conflict:
        runtime.event(raw, *conflict, warning=True)
    for ev in todo.events:
        runtime.event(raw, ev.reason, ev.message, ev.warning)
    if todo.draft_restart:
        metrics.DRAFT_RESTARTS.inc()
    later = (names.WORKLOADS, ns, name)
    if hold_status and todo.status_can_wait and rt.status_grace > 0 and rt.later(
            later, rt.status_grace, lambda: reconcile(rt, ns, name, logger, hold_status=False)):
        # Written by the pod's next event that matters (its readiness, usually), or else once the grace
        # is over (10 s): a Workload created and Running costs one status write.
        return
    rt.cancel_later(later)
    kube.write_status(names.WORKLOADS, wl.metadata, wl.status, todo.status)
    if problem and problem[0] == "ServiceFailed":
        raise kopf.TemporaryError(problem[1], delay=10)


def _hold(wl: models.Workload, art: ArtifactView | None, pods: list[PodView]) -> Hold | None:
    """A Manual Workload whose Artifact changed since its pods started, with no restart asked since: its
    pods stay as they are (one of them, read, is the template of any it needs again). None otherwise, or
    when none of its pods is left to copy (it then starts on the Artifact's spec)."""
    if wl.spec.update_policy != models.UpdatePolicy.MANUAL or art is None or art.spec is None:
        return None
    held = wl.status.artifact.spec_digest if wl.status.artifact else None
    restarted_at = wl.metadata.annotations.get(names.A_RESTARTED_AT)
    if not held or held == art.digest or restarted_at != wl.status.restarted_at:
        return None
    rev = b.revision(held, restarted_at)
    source = next((p for p in pods if p.owner == wl.metadata.uid and p.revision == rev and not p.deleting), None)
    reply = source and kube.ignore(404)(kube.core().read_namespaced_pod)(source.name, wl.metadata.namespace,
                                                                         _preload_content=False)
    return Hold(held, json.loads(reply.data)) if reply else None


def _create_pod(ns: str, pod: Body, owner: str) -> bool:
    """Create a pod; False when its name is taken by a pod this Workload does not own. (409 of its own
    pod: it exists already, or the failed one it replaces is still terminating; the next event retries.)"""
    reply = kube.ignore(409)(kube.core().create_namespaced_pod)(ns, pod, _preload_content=False)
    if reply is not None:
        kube.unread(reply)
        return True
    live = kube.ignore(404)(kube.core().read_namespaced_pod)(pod["metadata"]["name"], ns, _preload_content=False)
    if live is None:
        return True  # gone meanwhile: the next event retries
    return kube.owned_by(json.loads(live.data), owner)


def _made_for(wl: models.Workload, raw: Body, art: ArtifactView) -> bool:
    """Whether an existing Artifact is the one made from this Workload's inline artifact: the object its
    status recorded; or, before one was recorded, one made for it after it was created (an Artifact
    someone made in advance under its name is not)."""
    recorded = wl.status.artifact.uid if wl.status.artifact else None
    if recorded:
        return art.uid == recorded
    return art.created_by_workload == wl.metadata.name and art.created >= str(raw["metadata"].get(
        "creationTimestamp") or "")


def _create_inline_artifact(raw: Body, wl: models.Workload, logger: kopf.Logger) -> tuple[ArtifactView | None, bool]:
    """A Workload with an inline artifact creates the Draft Artifact named after it (no owner:
    artifacts outlive development workloads). Returns it, and whether this call made it."""
    assert wl.spec.artifact is not None
    meta = wl.metadata
    body = {
        "apiVersion": names.API_VERSION, "kind": "Artifact",
        "metadata": {"name": meta.name, "namespace": meta.namespace,
                     "labels": {"app.kubernetes.io/managed-by": names.MANAGED_BY},
                     "annotations": {names.A_CREATED_BY_WORKLOAD: meta.name}},
        "spec": {**wl.spec.artifact.to_dict(), "lifecycle": models.Lifecycle.DRAFT.value},
    }
    created: Body | None = kube.ignore(409)(kube.custom().create_namespaced_custom_object)(
        names.GROUP, names.VERSION, meta.namespace, names.ARTIFACTS, body)
    if created is None:  # it exists (made by an earlier reconcile, or by someone else: the caller judges)
        existing = kube.get_kiln(names.ARTIFACTS, meta.namespace, meta.name)
        return (None if existing is None else artifact_view(existing)), False
    runtime.event(raw, "ArtifactCreated", f"created Draft Artifact {meta.name} from spec.artifact")
    logger.info(f"created Draft Artifact {meta.name}")
    return artifact_view(created), True


def _delete_pod(namespace: str, name: str, grace: int | None) -> None:
    reply = kube.ignore(404)(kube.core().delete_namespaced_pod)(name, namespace, grace_period_seconds=grace,
                                                                _preload_content=False)
    if reply is not None:
        kube.unread(reply)


def _services() -> kube.Children:
    return kube.Children.patched("Service", kube.core(), "service")


def _converge_service(wl: models.Workload, todo: Plan, have: ServiceView | None) -> tuple[str, str] | None:
    """The development Service onto the plan; ``have`` is what the services index knows of it. Returns
    the problem to report, if any."""
    name = b.workload_service_name(wl.metadata.name)
    if have is None:
        live: Body | None = None
    elif have.name == name:
        live = {"metadata": {"ownerReferences": [{"uid": u} for u in have.owners]},
                "spec": {"ports": [dict(zip(("name", "port", "targetPort", "protocol"), p, strict=True))
                                   for p in have.ports], "selector": dict(have.selector)}}
    else:  # another Service carries this Workload's label: see what has the name
        live = kube.UNREAD
    try:
        kube.ensure_child(_services(), wl.metadata, "Workload", name, todo.service, live, differs=lambda d, lv: (
            service_ports(d["spec"]["ports"]) != service_ports(lv["spec"]["ports"])
            or d["spec"]["selector"] != lv["spec"]["selector"]))
    except kube.ChildConflict as e:
        return "NameConflict", str(e)
    except ApiException as e:  # the pods run meanwhile, and a retry follows
        return "ServiceFailed", f"Service {name}: {kube.reason(e)}"
    return None


# --- triggers ----------------------------------------------------------------------------------------


@kopf.on.event(names.GROUP, names.VERSION, names.WORKLOADS)
async def workload_event(type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: Any,
                         **_: Any) -> None:
    """Every watch event of a Workload, its own status writes' included: the body a reconcile starts
    from (no GET), and the index of which Artifact each Workload runs."""
    rt = runtime.of(memo)
    rt.indexes.workloads.observe(type, body)
    if type == "DELETED":
        rt.workloads.pop((str(namespace), name), None)
    else:
        rt.workloads[str(namespace), name] = json.dumps(_slim(body), separators=(",", ":"))


@kopf.on.resume(names.GROUP, names.VERSION, names.WORKLOADS)
@kopf.on.create(names.GROUP, names.VERSION, names.WORKLOADS)
@kopf.on.update(names.GROUP, names.VERSION, names.WORKLOADS)
def workload_changed(namespace: str | None, name: str, body: kopf.Body, memo: Any, logger: kopf.Logger,
                     **_: Any) -> None:
    rt = runtime.of(memo)
    rt.indexes.workloads.update(body)
    reconcile(rt, str(namespace), name, logger, body=_slim(body))


def _slim(body: kopf.Body) -> Body:
    """The raw body of a watch event without metadata.managedFields, which nothing here reads (a
    shallow copy: nothing here writes into a body)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in (raw.get("metadata") or {}).items() if k != "managedFields"}
    return raw


@kopf.on.event("", "v1", "services", labels={names.L_WORKLOAD: kopf.PRESENT})
async def service_event(namespace: str | None, labels: Mapping[str, str], type: str | None, body: kopf.Body,
                        memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """A development Service deleted or edited by hand is put back."""
    rt = runtime.of(memo)
    rt.indexes.services.observe(type, body)
    if type in ("DELETED", "MODIFIED"):
        await rt.in_thread(reconcile, rt, str(namespace), labels[names.L_WORKLOAD], logger)


async def reconcile_users(rt: runtime.Runtime, namespace: str, artifact: str, logger: kopf.Logger) -> None:
    """Reconcile every Workload that runs this Artifact (a draft change restarts them), several at a
    time. One failure does not hold up the others; the Artifact's handler is retried for them."""
    names = sorted(set(rt.indexes.workloads.get((namespace, artifact))))
    failed: list[str] = []
    gate = asyncio.Semaphore(rt.restart_parallelism)

    async def one(wl: str) -> None:
        async with gate:
            try:
                await rt.in_thread(reconcile, rt, namespace, wl, logger)
            except (ApiException, kopf.TemporaryError) as e:
                logger.warning(f"reconciling Workload {wl} after a change of Artifact {artifact} failed: {e}")
                failed.append(wl)

    await asyncio.gather(*(one(wl) for wl in names))
    if failed:
        raise kopf.TemporaryError(f"Workload(s) {', '.join(sorted(failed))} not yet reconciled", delay=10)
