"""Workload reconcile: one level-triggered function, called from every trigger.

Triggers: the Workload's own create/update/resume, events of its pods, and changes of the
Artifact it runs. Each call reads the current Workload and Artifact and converges the pods and
the Service onto them; a call that finds nothing to change writes nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import kopf
import pydantic
from kubernetes.client.rest import ApiException

from kiln import builders as b
from kiln import cache, kube
from kiln import conditions as cond
from kiln.cache import Index
from kiln.digest import spec_digest

Body = dict[str, Any]
WORKLOADS = (b.GROUP, b.VERSION, "workloads")
ARTIFACTS = (b.GROUP, b.VERSION, "artifacts")
USERS_PARALLELISM = int(os.environ.get("KILN_RESTART_PARALLELISM", "8"))


def artifact_name(workload: Body) -> str:
    spec = workload.get("spec") or {}
    ref = spec.get("artifactRef") or {}
    return str(ref.get("name") or workload["metadata"]["name"])


# --- indexes: what the reconcile needs to know without list calls ------------------------------


def _pod_entry(pod: Body) -> tuple[tuple[str, str], Body]:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    return (meta["namespace"], labels[b.L_WORKLOAD]), {
        "name": meta["name"], "revision": labels.get(b.L_REVISION), "digest": labels.get(b.L_DIGEST),
        **pod_state(pod.get("status") or {}, meta)._asdict(),
    }


# Container states a kubelet reports for a pod that will not start by itself.
BROKEN = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                    "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


class PodState(NamedTuple):
    ready: bool
    phase: str | None
    deleting: bool
    broken: str | None  # "container app: CrashLoopBackOff (back-off restarting failed container)"


def pod_state(status: Body, meta: Body) -> PodState:
    """What a Workload's status depends on, of one of its pods (pure)."""
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    broken = next((f"container {cs.get('name')}: {w['reason']}" + (f" ({w['message']})" if w.get("message") else "")
                   for cs in status.get("containerStatuses") or []
                   if (w := (cs.get("state") or {}).get("waiting") or {}).get("reason") in BROKEN), None)
    return PodState(ready, status.get("phase"), bool(meta.get("deletionTimestamp")), broken)


def _artifact_entry(art: Body) -> tuple[tuple[str, str], Body]:
    return (art["metadata"]["namespace"], art["metadata"]["name"]), dict(art.get("spec") or {})


def _service_entry(svc: Body) -> tuple[tuple[str, str], Body]:
    meta, spec = svc["metadata"], svc.get("spec") or {}
    return (meta["namespace"], (meta.get("labels") or {})[b.L_WORKLOAD]), {
        "name": meta["name"], "ports": [_port(p) for p in spec.get("ports") or []],
        "selector": dict(spec.get("selector") or {}),
        "owners": [r.get("uid") for r in meta.get("ownerReferences") or []]}


def _workload_entry(wl: Body) -> tuple[tuple[str, str], str]:
    return (wl["metadata"]["namespace"], artifact_name(wl)), str(wl["metadata"]["name"])


@dataclass
class Indexes:
    """What the operator knows from its watches (cache.Index): no list or get calls."""

    pods: Index[Body]
    artifacts: Index[Body]
    services: Index[Body]
    workloads: Index[str]

    def all(self) -> tuple[Index[Any], ...]:
        return self.pods, self.artifacts, self.services, self.workloads


INDEXES = Indexes(Index(_pod_entry), Index(_artifact_entry), Index(_service_entry), Index(_workload_entry))
# The namespaces the operator serves (all when empty): set by kiln.main.run.
NAMESPACES: list[str] = []


@kopf.on.startup()
def prime_indexes(logger: logging.Logger, **_: Any) -> None:
    """One LIST per kind, before kopf starts watching; afterwards the watches keep the indexes."""
    idx = INDEXES
    core, custom, sel = kube.core(), kube.custom(), {"label_selector": b.L_WORKLOAD}
    scopes: list[str | None] = [*NAMESPACES] or [None]
    for ns in scopes:
        if ns is None:
            lists: tuple[Callable[..., Any], ...] = (
                functools.partial(core.list_pod_for_all_namespaces, **sel),
                functools.partial(custom.list_cluster_custom_object, *ARTIFACTS),
                functools.partial(core.list_service_for_all_namespaces, **sel),
                functools.partial(custom.list_cluster_custom_object, *WORKLOADS))
        else:
            lists = (functools.partial(core.list_namespaced_pod, ns, **sel),
                     functools.partial(custom.list_namespaced_custom_object, b.GROUP, b.VERSION, ns, "artifacts"),
                     functools.partial(core.list_namespaced_service, ns, **sel),
                     functools.partial(custom.list_namespaced_custom_object, b.GROUP, b.VERSION, ns, "workloads"))
        for index, fetch in zip(idx.all(), lists, strict=True):
            for page in cache.pages(fetch):
                index.prime(page)
    logger.info(f"indexed {len(idx.pods)} pods, {len(idx.artifacts)} artifacts, {len(idx.services)} services, "
                f"{len(idx.workloads)} workloads")

    def exists(get: Callable[..., Any]) -> Callable[[str, str, str], bool]:
        def check(ns: str, name: str, uid: str) -> bool:
            try:
                obj = json.loads(get(name, ns, _preload_content=False).data)
            except ApiException as e:
                return e.status != 404
            return bool(obj["metadata"]["uid"] == uid)
        return check

    def custom_get(plural: str) -> Callable[..., Any]:
        return lambda name, ns, **kw: custom.get_namespaced_custom_object(b.GROUP, b.VERSION, ns, plural, name, **kw)

    def sweep() -> None:
        gets = (core.read_namespaced_pod, custom_get("artifacts"), core.read_namespaced_service,
                custom_get("workloads"))
        try:
            dropped = sum(index.sweep(exists(get)) for index, get in zip(idx.all(), gets, strict=True))
        except Exception as e:  # a thread's last resort: the entries stay, as before
            logger.warning(f"could not check the index entries no watch event has confirmed: {e}")
            return
        if dropped:
            logger.info(f"dropped {dropped} index entries of objects deleted while the operator started")

    timer = threading.Timer(SWEEP_AFTER, sweep)
    timer.daemon = True
    timer.start()


# By then kopf has listed every kind (its initial listing confirms each entry still there); what it has
# not confirmed is checked with a GET.
SWEEP_AFTER = 120.0


# Artifacts and Workloads enter the indexes from their own create/update/resume handlers (what is
# indexed of them is in their spec); only their deletion needs a handler of its own.
@kopf.on.event(*ARTIFACTS, when=cache.deleted)
async def artifact_deleted(body: kopf.Body, **_: Any) -> None:
    INDEXES.artifacts.observe("DELETED", body)


@kopf.on.event(*WORKLOADS, when=cache.deleted)
async def workload_deleted(body: kopf.Body, **_: Any) -> None:
    INDEXES.workloads.observe("DELETED", body)


# --- the reconcile ---------------------------------------------------------------------------


@dataclass
class Observed:
    pods: list[Body]
    service: Body | None

    def at(self, rev: str) -> list[Body]:
        return [p for p in self.pods if p["revision"] == rev and not p["deleting"]]


def ensure_inline_artifact(workload: Body, logger: logging.Logger) -> Body | None:
    """A Workload with an inline artifact creates the Draft Artifact named after it (no owner:
    artifacts outlive development workloads)."""
    inline = workload["spec"]["artifact"]
    meta = workload["metadata"]
    body = {
        "apiVersion": b.API_VERSION, "kind": "Artifact",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                     "labels": {"app.kubernetes.io/managed-by": b.MANAGED_BY},
                     "annotations": {"kiln.dev/created-by-workload": meta["name"]}},
        "spec": {**{k: v for k, v in inline.items() if v is not None}, "lifecycle": "Draft"},
    }
    try:
        created = kube.custom().create_namespaced_custom_object(b.GROUP, b.VERSION, meta["namespace"], "artifacts",
                                                                body)
    except ApiException as e:
        if e.status != 409:
            raise
        return kube.get_kiln("artifacts", meta["namespace"], meta["name"])
    kopf.info(workload, reason="ArtifactCreated", message=f"created Draft Artifact {meta['name']} from spec.artifact")
    logger.info(f"created Draft Artifact {meta['name']}")
    return dict(created)


def reconcile(namespace: str, name: str, idx: Indexes, logger: logging.Logger, body: Body | None = None) -> None:
    try:
        _locked_reconcile(namespace, name, idx, logger, body)
    except ApiException as e:
        if e.status == 403 and "being terminated" in str(e.body):
            return  # the namespace is going away, and the Workload with it
        raise


def _locked_reconcile(namespace: str, name: str, idx: Indexes, logger: logging.Logger, body: Body | None) -> None:
    with kube.locked("workload", namespace, name):
        # The one read: the Workload itself, fresh, since its status is what this writes (its own
        # handlers pass the body kopf has just received instead).
        workload = body if body is not None else kube.get_kiln("workloads", namespace, name)
        if workload is None or workload["metadata"].get("deletionTimestamp"):
            return  # garbage collection removes the pods and the Service
        key = (namespace, name)
        art = idx.artifacts.one((namespace, artifact_name(workload)))
        _reconcile(workload, {"spec": art} if art is not None else None,
                   Observed(idx.pods.get(key), idx.services.one(key)), logger)


def _reconcile(workload: Body, artifact: Body | None, observed: Observed, logger: logging.Logger) -> None:
    meta, spec = workload["metadata"], workload.get("spec") or {}
    status = workload.get("status") or {}
    ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
    first_visit = not status.get("observedGeneration")  # the CRD defaults it to 0

    if spec.get("artifact") is not None and artifact is None:
        artifact = ensure_inline_artifact(workload, logger)
    art_name = artifact_name(workload)
    if artifact is None:
        msg = f"Artifact {art_name} not found in namespace {ns}; the workload starts once it exists"
        kube.write_status("workloads", workload, {
            "state": "Pending", "replicas": 0, "readyReplicas": 0,
            "artifact": {"name": art_name},
        }, [
            cond.condition("Ready", False, "ArtifactNotFound", msg, gen),
            cond.condition("Available", False, "ArtifactNotFound", msg, gen),
            cond.condition("Progressing", False, "ArtifactNotFound", msg, gen),
        ])
        _delete_pods(ns, observed.pods, grace=None)
        return

    containers = artifact["spec"]["containers"]
    try:
        digest = spec_digest(artifact["spec"])
    except pydantic.ValidationError as e:
        msg = f"Artifact {art_name} is invalid: {e.errors()[0]['msg']}"
        kube.write_status("workloads", workload, {**(workload.get("status") or {})}, [
            cond.condition("Ready", False, "InvalidArtifact", msg, gen),
            cond.condition("Available", bool(observed.pods), "InvalidArtifact", msg, gen),
            cond.condition("Progressing", False, "InvalidArtifact", msg, gen),
        ])
        return
    restarted_at = (meta.get("annotations") or {}).get(b.RESTARTED_AT)
    rev = b.revision(digest, restarted_at)
    running = spec.get("state", "Running") != "Stopped"
    replicas = int(spec.get("replicas", 1)) if running else 0

    # Converge the pods: the current revision at indexes 0..replicas-1, nothing else.
    current = {p["name"]: p for p in observed.at(rev)}
    wanted = {b.workload_pod_name(name, rev, i): i for i in range(replicas)}
    stale = [p for p in observed.pods if p["name"] not in wanted and not p["deleting"]]
    failed = [p for p in current.values() if p["phase"] in ("Failed", "Succeeded")]
    old_revision = [p for p in stale if p["revision"] != rev]
    if old_revision and running:
        same_spec = any(p["digest"] == b.digest_label(digest) for p in old_revision)
        why = (f"restart requested at {restarted_at}" if same_spec
               else f"Artifact {art_name} changed to {digest[:19]}")
        kopf.info(workload, reason="Restarted", message=f"restarting {len(old_revision)} pod(s): {why}")
    elif stale and not running and status.get("state") != "Stopped":
        kopf.info(workload, reason="Stopped", message=f"stopping: deleting {len(stale)} pod(s)")
    _delete_pods(ns, stale, grace=None)
    _delete_pods(ns, failed, grace=0)
    if failed:
        kopf.warn(workload, reason="PodReplaced",
                  message=f"replacing failed pod(s) {', '.join(p['name'] for p in failed)}")

    owner = b.owner_reference(workload, "Workload")
    created = 0
    for pod_name, i in wanted.items():
        if pod_name in current and current[pod_name] not in failed:
            continue
        pod = b.workload_pod(name, art_name, containers, digest, rev, i)
        pod["metadata"]["ownerReferences"] = [owner]
        try:
            kube.unread(kube.core().create_namespaced_pod(ns, pod, _preload_content=False))
            created += 1
        except ApiException as e:
            if e.status != 409:  # 409: exists already, or the replaced one is still terminating
                raise
    if created and first_visit:
        kopf.info(workload, reason="Created", message=f"created {created} pod(s) running Artifact {art_name}")
    elif created and running and status.get("state") == "Stopped":
        kopf.info(workload, reason="Started", message=f"started {created} pod(s)")

    problem: tuple[str, str] | None = None
    try:
        _ensure_service(workload, art_name, containers if running else [], observed.service)
    except kube.ChildConflict as e:
        problem = ("NameConflict", str(e))
    except ApiException as e:  # reported below; the pods run meanwhile, and a retry follows
        problem = ("ServiceFailed", f"Service {b.workload_service_name(name)}: {kube.reason(e)}")
    if problem:
        kopf.warn(workload, reason=problem[0], message=problem[1])

    ready = sum(1 for p in current.values() if p["ready"] and p not in failed)
    if not running:
        state, ok, reason = ("Stopped", True, "Stopped") if not observed.pods else ("Stopped", False, "Stopping")
        msg = "stopped as requested" if ok else f"stopping: {len(observed.pods)} pod(s) left"
    elif ready == replicas:
        state, ok, reason, msg = "Running", True, "PodsReady", f"{ready}/{replicas} pods ready"
    elif broken := [f"pod {p['name']} {p['broken']}" for p in current.values() if p.get("broken")]:
        state, ok, reason, msg = "Failed", False, "PodsFailing", "; ".join(broken)
    elif current or created:
        state, ok, reason, msg = "Starting", False, "PodsNotReady", f"{ready}/{replicas} pods ready"
    else:
        state, ok, reason, msg = "Pending", False, "PodsCreating", f"creating {replicas} pod(s)"
    if problem:
        ok, (reason, msg) = False, problem
    done = ok and not stale and len(current) == replicas
    kube.write_status("workloads", workload, {
        "state": state, "replicas": replicas, "readyReplicas": ready,
        "artifact": {"name": art_name, "lifecycle": artifact["spec"].get("lifecycle", "Draft"),
                     "specDigest": digest},
        **({"restartedAt": restarted_at} if restarted_at else {}),
    }, [
        cond.condition("Ready", ok, reason, msg, gen),
        cond.condition("Available", running and ready >= max(replicas, 1),
                       "Stopped" if not running else ("MinimumReplicasAvailable" if ready else "NoReadyPods"),
                       msg, gen),
        cond.condition("Progressing", not done, "Converging" if not done else "Converged",
                       msg if not done else f"revision {rev} is rolled out", gen),
    ])
    if problem and problem[0] == "ServiceFailed":
        raise kopf.TemporaryError(problem[1], delay=10)


_executor: Executor | None = None  # kopf's thread pool, where its handlers run


@kopf.on.startup()
async def remember_executor(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _executor
    _executor = settings.execution.executor


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call in kopf's thread pool, with the caller's context (kopf's, for Events)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_executor, call)


def _delete_pods(namespace: str, pods: list[Body], grace: int | None) -> None:
    for p in pods:
        reply = kube.ignore(404)(kube.core().delete_namespaced_pod)(p["name"], namespace, grace_period_seconds=grace,
                                                                    _preload_content=False)
        if reply is not None:
            kube.unread(reply)


def _ensure_service(workload: Body, art_name: str, containers: list[Body], have: Body | None) -> None:
    """Converge the development Service; ``have`` is what the services index knows of it."""
    meta = workload["metadata"]
    ns, name = meta["namespace"], meta["name"]
    svc_name = b.workload_service_name(name)
    desired = b.service(svc_name, art_name, "workload", b.workload_selector(name), containers)
    ours = have is not None and have["name"] == svc_name and meta["uid"] in have["owners"]
    if desired is None:
        if ours:
            kube.ignore(404)(kube.core().delete_namespaced_service)(svc_name, ns)
        return
    desired["metadata"]["ownerReferences"] = [b.owner_reference(workload, "Workload")]
    if have is None:
        try:
            kube.core().create_namespaced_service(ns, desired)
        except ApiException as e:
            if e.status != 409:
                raise
            existing = kube.core().read_namespaced_service(svc_name, ns)
            if not any(r.uid == meta["uid"] for r in existing.metadata.owner_references or []):
                raise kube.ChildConflict(f"Service {svc_name} exists and is not owned by this Workload") from None
    elif not ours:
        raise kube.ChildConflict(f"Service {svc_name} exists and is not owned by this Workload")
    elif (have["ports"] != [_port(p) for p in desired["spec"]["ports"]]
          or have["selector"] != desired["spec"]["selector"]):
        kube.core().patch_namespaced_service(svc_name, ns, {"spec": desired["spec"]})


def _port(p: Body) -> tuple[Any, ...]:
    return (p.get("name"), p.get("port"), p.get("targetPort"), p.get("protocol"))


# --- triggers ----------------------------------------------------------------------------------


@kopf.on.resume(*WORKLOADS)
@kopf.on.create(*WORKLOADS)
@kopf.on.update(*WORKLOADS)
def workload_changed(namespace: str, name: str, body: kopf.Body, logger: logging.Logger, **kwargs: Any) -> None:
    INDEXES.workloads.update(body)
    reconcile(namespace, name, INDEXES, logger, body=_plain(body))


def _plain(body: kopf.Body) -> Body:
    """A kopf Body as plain, mutable dicts (without metadata.managedFields, which nothing here reads)."""
    plain: Body = json.loads(json.dumps({**body, "metadata": {
        k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}}))
    return plain


@kopf.on.event("", "v1", "pods", labels={b.L_WORKLOAD: kopf.PRESENT})
async def pod_event(namespace: str, labels: dict[str, str], type: str | None, status: Body, meta: Body,
                    body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    """A pod's readiness, failure or deletion matters to its Workload; scheduling and the like do not.
    Sorted out here on the event loop; only what matters goes to a thread to be reconciled."""
    entry = INDEXES.pods.observe(type, body)
    if type is None:  # the initial listing: the workloads' resume handlers cover it
        return
    if type != "DELETED":
        state = pod_state(status, meta)
        before = PodState(*(entry[f] for f in PodState._fields)) if entry is not None else None
        if state == before or (before is None and state == PodState(False, "Pending", False, None)):
            return  # nothing the Workload's status or pods depend on has changed
    await in_thread(reconcile, namespace, labels[b.L_WORKLOAD], INDEXES, logger)


@kopf.on.event("", "v1", "services", labels={b.L_WORKLOAD: kopf.PRESENT})
async def service_event(namespace: str, labels: dict[str, str], type: str | None, body: kopf.Body,
                        logger: logging.Logger, **_: Any) -> None:
    """A development Service deleted or edited by hand is put back."""
    INDEXES.services.observe(type, body)
    if type in ("DELETED", "MODIFIED"):
        await in_thread(reconcile, namespace, labels[b.L_WORKLOAD], INDEXES, logger)


def reconcile_users(namespace: str, artifact: str, idx: Indexes, logger: logging.Logger) -> None:
    """Reconcile every Workload that runs this Artifact (a draft change restarts them), in parallel.
    One failure does not hold up the others; the Artifact's handler is retried for them."""
    names = sorted(set(idx.workloads.get((namespace, artifact))))
    if not names:
        return
    failed: list[str] = []

    def one(wl: str) -> None:
        try:
            reconcile(namespace, wl, idx, logger)
        except (ApiException, kopf.TemporaryError) as e:
            logger.warning(f"reconciling Workload {wl} after a change of Artifact {artifact} failed: {e}")
            failed.append(wl)

    # kopf's context (for its Events and logs) goes along into each thread, one copy each.
    parent = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=max(1, min(USERS_PARALLELISM, len(names)))) as pool:
        list(pool.map(lambda wl: parent.copy().run(one, wl), names))
    if failed:
        raise kopf.TemporaryError(f"Workload(s) {', '.join(sorted(failed))} not yet reconciled", delay=10)
