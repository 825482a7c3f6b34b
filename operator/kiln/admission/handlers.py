"""Admission handlers: validation with messages that name the object and the field, and the mutations
that record who registered an artifact or changed a Deployment.

Handlers are plain functions of a :class:`Review`; :mod:`kiln.admission.server` serves them over TLS in
a process of its own, so a review never waits behind the controllers. Which requests reach them is
:mod:`kiln.admission.configuration`'s.

The CRD schemas and CEL rules hold even while the operator is down; the webhooks add clear messages
and cross-object checks. They look at ``spec`` only: the operator's own writes (finalizers,
annotations, status) never meet a rule here (nolar/kopf#883).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic

from kiln.api.digest import locked_spec
from kiln.api.models import (
    ApprovalSpec,
    Artifact,
    ArtifactSpec,
    Deployment,
    DeploymentSpec,
    KilnModel,
    Lifecycle,
    Trigger,
    Workload,
    problems,
    register_command,
)
from kiln.controllers.conditions import now
from kiln.names import (
    A_CHANGED_BY,
    A_REGISTERED_AT,
    A_REGISTERED_BY,
    ARTIFACTS,
    DEPLOYMENTS,
    GROUP,
    VERB_APPROVE,
    VERB_REGISTER,
    WORKLOADS,
)
from kiln.tree import changed_paths

Body = dict[str, Any]
M = TypeVar("M", bound=KilnModel)


class Denied(Exception):
    """An admission review's answer: not allowed, with a message naming the object and the field."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Review:
    """What a handler sees of an AdmissionReview request."""

    operation: str
    name: str
    namespace: str
    obj: Body  # the new object, or the old one for DELETE
    old: Body | None
    username: str
    user: Body  # the request's userInfo: username, uid, groups, extra
    kind: str = ""

    @classmethod
    def of(cls, request: Body) -> Review:
        obj = request.get("object") or request.get("oldObject") or {}
        user = dict(request.get("userInfo") or {})
        return cls(operation=request["operation"], name=request.get("name") or obj["metadata"].get("name", ""),
                   namespace=request.get("namespace") or "", obj=obj, old=request.get("oldObject"),
                   username=str(user.get("username") or "unknown"), user=user,
                   kind=str((request.get("kind") or {}).get("kind") or ""))

    @property
    def spec(self) -> Body:
        return dict(self.obj.get("spec") or {})

    @property
    def old_spec(self) -> Body:
        return dict((self.old or {}).get("spec") or {})

    def annotations(self, old: bool = False) -> Body:
        return dict((((self.old or {}) if old else self.obj).get("metadata") or {}).get("annotations") or {})

    @property
    def spec_changed(self) -> bool:
        return self.operation == "CREATE" or self.old_spec != self.spec


# A mutating handler returns the changes to make: {"annotations": {key: value or None}, "spec": {...}}.
Changes = dict[str, dict[str, Any]]


def parsed(model: type[M], spec: Body, kind: str, name: str) -> M:
    """The spec as its model, or a denial naming every invalid field."""
    try:
        return model.model_validate(spec)
    except pydantic.ValidationError as e:
        raise Denied(f"{kind} {name}: {problems(e)}") from None


def _kube() -> Any:
    """The API client, imported on first use: most reviews need none, and the webhook server's
    process stays small without it."""
    from kiln import kube

    return kube


def _get(model: type[M], plural: str, namespace: str, name: str) -> M | None:
    """An object of the review's namespace, parsed; None when it is missing or does not parse."""
    body = _kube().get_kiln(plural, namespace, name)
    try:
        return None if body is None else model.model_validate(body)
    except pydantic.ValidationError:
        return None


def validate_artifact(r: Review) -> None:
    if r.operation == "DELETE":
        users = sorted(d["metadata"]["name"] for d in _kube().list_kiln(DEPLOYMENTS, r.namespace)
                       if ((d.get("spec") or {}).get("artifactRef") or {}).get("name") == r.name)
        if users:
            raise Denied(f"Artifact {r.name} is in use by Deployment {', '.join(users)} (deployments.kiln.dev): "
                         f"switch or delete {'it' if len(users) == 1 else 'them'} first", code=409)
        return
    spec = parsed(ArtifactSpec, r.spec, "Artifact", r.name)
    if r.operation != "UPDATE":
        return
    try:
        old = ArtifactSpec.model_validate(r.old_spec)
    except pydantic.ValidationError:
        return  # nothing locked to compare with
    if not old.registered:
        return
    if not spec.registered:
        raise Denied(f"Artifact {r.name} is {Lifecycle.REGISTERED}: spec.lifecycle cannot return to "
                     f"{Lifecycle.DRAFT}; create a new Artifact to iterate on")
    changed = changed_paths(locked_spec(old), locked_spec(spec))
    if changed:
        raise Denied(f"Artifact {r.name} is {Lifecycle.REGISTERED} and its spec is locked: {', '.join(changed)} "
                     "changed (only spec.displayName and spec.description may change; create a new Artifact "
                     "instead)")


def record_registration(r: Review) -> Changes:
    """Record who registered an artifact, and when, from the admission request: never from input.
    (Mutating webhooks run before the schema's validation: the spec is read as it comes.)"""
    registering = (r.spec.get("lifecycle") == Lifecycle.REGISTERED
                   and r.old_spec.get("lifecycle") != Lifecycle.REGISTERED)
    if registering and not allowed(r, VERB_REGISTER, ARTIFACTS, r.name, GROUP):
        raise Denied(f"Artifact {r.name}: registering needs the verb {VERB_REGISTER} on artifacts.{GROUP} in "
                     f"namespace {r.namespace}, which {r.username} does not have (ask for the registrar role)",
                     code=403)
    before = r.annotations(old=True)
    recorded = {A_REGISTERED_BY: r.username, A_REGISTERED_AT: now()} if registering \
        else {k: before.get(k) for k in (A_REGISTERED_BY, A_REGISTERED_AT)}
    current = r.annotations()
    return {"annotations": {k: v for k, v in recorded.items() if current.get(k) != v}}


def audit_deployment(r: Review) -> Changes:
    """Fill artifactRef from workloadRef, and record who made each change of the spec."""
    # Metadata-only updates (and the operator's own) keep the record as it was.
    actor = r.username if r.spec_changed else r.annotations(old=True).get(A_CHANGED_BY)
    changes: Changes = {"annotations": {A_CHANGED_BY: actor} if r.annotations().get(A_CHANGED_BY) != actor
                        else {}}
    wl_name = (r.spec.get("workloadRef") or {}).get("name")
    if not (r.spec.get("artifactRef") or {}).get("name") and wl_name:
        wl = _get(Workload, WORKLOADS, r.namespace, wl_name)
        if wl is None:
            raise Denied(f"spec.workloadRef: Workload {wl_name} not found in namespace {r.namespace}")
        changes["spec"] = {"artifactRef": {"name": wl.artifact_name}}
    return changes


# --- what the pods would read: Secrets and ConfigMaps ---------------------------------------------------

def references(containers: list[Body], at: str) -> dict[tuple[str, str], str]:
    """The Secrets and ConfigMaps that containers read: (resource, name) -> the first field naming it."""
    out: dict[tuple[str, str], str] = {}
    for i, c in enumerate(containers):
        for j, e in enumerate(c.get("env") or []):
            for key, resource in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                name = ((e.get("valueFrom") or {}).get(key) or {}).get("name")
                if name:
                    out.setdefault((resource, name), f"{at}containers[{i}].env[{j}].valueFrom.{key}")
        for j, e in enumerate(c.get("envFrom") or []):
            for key, resource in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                name = (e.get(key) or {}).get("name")
                if name:
                    out.setdefault((resource, name), f"{at}containers[{i}].envFrom[{j}].{key}")
    return out


def artifact_references(artifact: Artifact) -> dict[tuple[str, str], str]:
    """What the pods of an existing Artifact would read (for a Workload or a Deployment that runs it)."""
    return references([c.to_dict() for c in artifact.spec.containers], f"Artifact {artifact.metadata.name}: spec.")


def allowed(r: Review, verb: str, resource: str, name: str, group: str = "") -> bool:
    """Whether the user of the request may do ``verb`` on that object of the request's namespace (a
    SubjectAccessReview, with the user's groups and extra)."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": r.user.get("username"), "uid": r.user.get("uid"), "groups": r.user.get("groups") or [],
        "extra": r.user.get("extra") or {}, "resourceAttributes": {
            "namespace": r.namespace, "verb": verb, "group": group, "resource": resource, "name": name}}}
    answer: Any = _kube().authorization().create_subject_access_review(review)
    return bool(answer.status.allowed)


def check_readable(r: Review, what: str, refs: dict[tuple[str, str], str],
                   before: dict[tuple[str, str], str] | None = None) -> None:
    """Refuse the request unless its user may read every Secret and ConfigMap the pods would read (those
    already referenced before this change excepted: nothing new is exposed)."""
    for (resource, name), field in refs.items():
        if before is not None and (resource, name) in before:
            continue
        if not allowed(r, "get", resource, name):
            kind = "Secret" if resource == "secrets" else "ConfigMap"
            raise Denied(f"{what}: {field}: {r.username} may not get {kind} {name} in namespace {r.namespace}, "
                         f"and the pods would read it: reference a {kind} you may read", code=403)


def check_references(r: Review) -> None:
    """Whoever creates or changes an Artifact or a Workload may read every Secret and ConfigMap its
    pods would read: Kiln's pods must not read for users what they could not read themselves."""
    if r.kind == "Artifact":
        refs = references(list(r.spec.get("containers") or []), "spec.")
        before = references(list(r.old_spec.get("containers") or []), "spec.") if r.old else None
        return check_readable(r, f"Artifact {r.name}", refs, before)
    inline = r.spec.get("artifact")
    if inline is not None:
        old_inline = r.old_spec.get("artifact") if r.old else None
        return check_readable(r, f"Workload {r.name}", references(list(inline.get("containers") or []),
                                                                  "spec.artifact."),
                              None if old_inline is None else references(list(old_inline.get("containers") or []),
                                                                         "spec.artifact."))
    ref = (r.spec.get("artifactRef") or {}).get("name")
    if not ref or (r.old is not None and (r.old_spec.get("artifactRef") or {}).get("name") == ref):
        return None  # the same Artifact as before: nothing new is read
    artifact = _get(Artifact, ARTIFACTS, r.namespace, ref)
    if artifact is not None:  # a missing Artifact: the Workload waits for it, and whoever creates it is checked
        check_readable(r, f"Workload {r.name}", artifact_references(artifact))
    return None


def validate_deployment(r: Review) -> None:
    if not r.spec_changed:
        return  # metadata, finalizers: never block the operator's own writes
    spec = parsed(DeploymentSpec, r.spec, "Deployment", r.name)
    if spec.artifact_ref is None:
        raise Denied(f"Deployment {r.name}: spec.artifactRef is required (or a spec.workloadRef to take it from)")
    art_name = spec.artifact_ref.name
    artifact = _get(Artifact, ARTIFACTS, r.namespace, art_name)
    if artifact is None:
        raise Denied(f"Deployment {r.name}: spec.artifactRef: Artifact {art_name} not found "
                     f"in namespace {r.namespace}")
    if not artifact.spec.registered:
        raise Denied(f"Deployment {r.name}: Artifact {art_name} is {Lifecycle.DRAFT}; register it first: "
                     + register_command(art_name))
    if r.operation == "CREATE" or (r.old_spec.get("artifactRef") or {}).get("name") != art_name:
        # Production pods read them for whoever puts the Artifact into production.
        check_readable(r, f"Deployment {r.name}", artifact_references(artifact))


# --- approvals ------------------------------------------------------------------------------------------

def stamp_approval(r: Review) -> Changes:
    """The approver of an Approval is who creates it: stamped from the request, whatever it says."""
    return {"annotations": {}, "spec": {"approver": r.username}}


def validate_approval(r: Review) -> None:
    """An approval decides the current change of a Deployment, by someone who may approve it and who did
    not request it."""
    spec = parsed(ApprovalSpec, r.spec, "Approval", r.name)
    dep_name = spec.deployment_ref.name
    dep = _kube().get_kiln(DEPLOYMENTS, r.namespace, dep_name)
    if dep is None:
        raise Denied(f"Approval {r.name}: spec.deploymentRef: Deployment {dep_name} not found in namespace "
                     f"{r.namespace}")
    current = int(dep["metadata"].get("generation") or 0)
    if spec.generation != current:
        raise Denied(f"Approval {r.name}: spec.generation {spec.generation} is not the current change of "
                     f"Deployment {dep_name} (generation {current}): decide the current one")
    requester = ((dep["metadata"].get("annotations") or {}).get(A_CHANGED_BY))
    if requester == r.username and not spec.deletion:  # who deletes is checked when they delete
        raise Denied(f"Approval {r.name}: {r.username} requested generation {current} of Deployment {dep_name} "
                     "and cannot decide it: another approver must", code=403)
    if not allowed(r, VERB_APPROVE, DEPLOYMENTS, dep_name, GROUP):
        raise Denied(f"Approval {r.name}: deciding changes of Deployment {dep_name} needs the verb {VERB_APPROVE} "
                     f"on deployments.{GROUP} in namespace {r.namespace}, which {r.username} does not have",
                     code=403)


def validate_deployment_deletion(r: Review) -> None:
    """Deleting a governed Deployment waits for approvals as its policy says (the Delete trigger); a
    namespace being deleted takes its Deployments along."""
    try:
        dep = Deployment.model_validate(r.obj)
    except pydantic.ValidationError:
        return  # not one the operator runs
    from kiln.controllers import governance

    policy = governance.policy_of(r.namespace)
    if Trigger.DELETE not in policy.triggers or not policy.approvals_for(dep.spec.importance):
        return
    namespace = _kube().core().read_namespace(r.namespace)
    if namespace.status and namespace.status.phase == "Terminating":
        return
    why = governance.deletion_verdict(dep, policy, governance.approvals_of(r.namespace), r.username)
    if why:
        raise Denied(why, code=403)


# The webhook paths: each request is answered in its connection's thread of the webhook server.
HANDLERS: dict[str, Callable[[Review], Changes | None]] = {
    "validate-artifact": validate_artifact,
    "record-registration": record_registration,
    "audit-deployment": audit_deployment,
    "validate-deployment": validate_deployment,
    "stamp-approval": stamp_approval,
    "validate-approval": validate_approval,
    "validate-deployment-deletion": validate_deployment_deletion,
    "check-artifact-references": check_references,
    "check-workload-references": check_references,
}


def json_patch(obj: Body, changes: Changes) -> list[Body]:
    """RFC 6902 operations that apply a handler's changes to the object under review."""
    ops: list[Body] = []
    annotations = (obj.get("metadata") or {}).get("annotations")
    wanted = dict(changes.get("annotations", {}))
    if wanted:
        if annotations is None:
            ops.append({"op": "add", "path": "/metadata/annotations",
                        "value": {k: v for k, v in wanted.items() if v is not None}})
        else:
            for k, v in wanted.items():
                path = "/metadata/annotations/" + k.replace("~", "~0").replace("/", "~1")
                if v is None:
                    if k in annotations:
                        ops.append({"op": "remove", "path": path})
                else:
                    ops.append({"op": "add", "path": path, "value": v})
    for k, v in changes.get("spec", {}).items():
        ops.append({"op": "add", "path": f"/spec/{k}", "value": v})
    return ops


def answer(hook: str, request: Body) -> Body:
    """The AdmissionReview response to one request (blocking: some handlers read from the API server)."""
    response: Body = {"uid": request.get("uid", ""), "allowed": True}
    try:
        r = Review.of(request)
        changes = HANDLERS[hook](r)
    except Denied as e:
        return {**response, "allowed": False, "status": {"code": e.code, "message": str(e)}}
    ops = json_patch(r.obj, changes) if changes else []
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return response
