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
    A_IMAGES,
    A_REGISTERED_AT,
    A_REGISTERED_BY,
    ARTIFACTS,
    DEPLOYMENTS,
    GROUP,
    L_COLLECTION,
    L_VERSION,
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
    dry_run: bool = False

    @classmethod
    def of(cls, request: Body) -> Review:
        obj = request.get("object") or request.get("oldObject") or {}
        user = dict(request.get("userInfo") or {})
        return cls(operation=request["operation"], name=request.get("name") or obj["metadata"].get("name", ""),
                   namespace=request.get("namespace") or "", obj=obj, old=request.get("oldObject"),
                   username=str(user.get("username") or "unknown"), user=user,
                   kind=str((request.get("kind") or {}).get("kind") or ""), dry_run=bool(request.get("dryRun")))

    @property
    def spec(self) -> Body:
        return dict(self.obj.get("spec") or {})

    @property
    def old_spec(self) -> Body:
        return dict((self.old or {}).get("spec") or {})

    def annotations(self, old: bool = False) -> Body:
        return self._meta("annotations", old)

    def labels(self, old: bool = False) -> Body:
        return self._meta("labels", old)

    def _meta(self, key: str, old: bool) -> Body:
        return dict((((self.old or {}) if old else self.obj).get("metadata") or {}).get(key) or {})

    @property
    def spec_changed(self) -> bool:
        return self.operation == "CREATE" or self.old_spec != self.spec


# A mutating handler returns the changes to make: {"annotations": {key: value or None}, "labels": {...},
# "spec": {...}}.
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


def _runs(deployment: Body, name: str, labels: Body) -> bool:
    """Whether a Deployment's spec names this Artifact: by name, or by its collection and version."""
    ref = (deployment.get("spec") or {}).get("artifactRef") or {}
    return ref.get("name") == name or (bool(ref.get("collection")) and ref.get("collection") == labels.get(L_COLLECTION)
                                       and str(ref.get("version")) == labels.get(L_VERSION))


def validate_artifact(r: Review) -> None:
    if r.operation == "DELETE":
        users = sorted(d["metadata"]["name"] for d in _kube().list_kiln(DEPLOYMENTS, r.namespace)
                       if _runs(d, r.name, r.labels()))
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


REGISTRATION_RECORD = (A_REGISTERED_BY, A_REGISTERED_AT, A_IMAGES)


def record_registration(r: Review) -> Changes:
    """Record who registered an artifact and when, the digests its images resolve to, and the version
    of its collection it becomes, from the admission request and the registries: never from input.
    Later requests keep the record as it was. (Mutating webhooks run before the schema's validation:
    the spec is read as it comes.)"""
    registering = (r.spec.get("lifecycle") == Lifecycle.REGISTERED
                   and r.old_spec.get("lifecycle") != Lifecycle.REGISTERED)
    collection = r.spec.get("collection") if isinstance(r.spec.get("collection"), str) else None
    if registering:
        if not allowed(r, VERB_REGISTER, ARTIFACTS, r.name, GROUP):
            raise Denied(f"Artifact {r.name}: registering needs the verb {VERB_REGISTER} on artifacts.{GROUP} in "
                         f"namespace {r.namespace}, which {r.username} does not have (ask for the registrar role)",
                         code=403)
        recorded: dict[str, str | None] = {A_REGISTERED_BY: r.username, A_REGISTERED_AT: now(),
                                           A_IMAGES: json.dumps(resolve_images(r), separators=(",", ":"))}
        from kiln.admission import versions

        # Last: a refusal above takes no number.
        uid = str((r.obj.get("metadata") or {}).get("uid") or "")
        version = str(versions.next_version(r.namespace, collection, uid, r.dry_run)) if collection else None
    else:
        before = r.annotations(old=True)
        recorded = {k: before.get(k) for k in REGISTRATION_RECORD}
        was_registered = r.old_spec.get("lifecycle") == Lifecycle.REGISTERED
        version = r.labels(old=True).get(L_VERSION) if was_registered else None
    current, labels = r.annotations(), r.labels()
    wanted = {L_COLLECTION: collection, L_VERSION: version}
    return {"annotations": {k: v for k, v in recorded.items() if current.get(k) != v},
            "labels": {k: v for k, v in wanted.items() if labels.get(k) != v}}


def _pull_credentials(r: Review) -> dict[str, tuple[str, str]]:
    """Registry credentials from the image pull secrets the Artifact names, which its author may read."""
    from kiln import registry

    creds: dict[str, tuple[str, str]] = {}
    for i, ref in enumerate(r.spec.get("imagePullSecrets") or []):
        name = str((ref or {}).get("name") or "")
        field = f"Artifact {r.name}: spec.imagePullSecrets[{i}]"
        if not allowed(r, "get", "secrets", name):
            raise Denied(f"{field}: {r.username} may not get Secret {name} in namespace {r.namespace}: name a "
                         "Secret you may read", code=403)
        secret = _kube().ignore(404)(_kube().core().read_namespaced_secret)(name, r.namespace)
        data = (secret.data or {}) if secret is not None else {}
        raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
        if raw is None:
            raise Denied(f"{field}: Secret {name} " + ("not found" if secret is None else
                         "has no .dockerconfigjson (type kubernetes.io/dockerconfigjson)")
                         + f" in namespace {r.namespace}")
        try:
            creds.update(registry.credentials(base64.b64decode(raw)))
        except ValueError as e:
            raise Denied(f"{field}: Secret {name}: {e}") from None
    return creds


def resolve_images(r: Review) -> list[Body]:
    """Each container's image resolved to its digest in its registry (``kiln.dev/images``); an image that
    cannot be resolved refuses the registration, unless the operator's policy keeps its tag."""
    from kiln import registry

    settings, creds, out = registry.Settings.from_env(), _pull_credentials(r), []
    for i, c in enumerate(r.spec.get("containers") or []):
        if not isinstance(c, dict):
            continue
        name, image = str(c.get("name") or ""), str(c.get("image") or "")
        entry: Body = {"container": name, "image": image}
        try:
            digest = registry.resolve(image, settings, creds)
            if digest is None:
                entry["message"] = (f"the tag is kept: Kiln does not resolve images of "
                                    f"{registry.parse(image).registry} (the operator's registries skipping "
                                    "digest resolution)")
            else:
                entry["digest"] = digest
        except (registry.ResolutionError, ValueError) as e:
            if not settings.allow_tags:
                raise Denied(f"Artifact {r.name}: spec.containers[{i}].image: cannot register: {e}") from None
            entry["message"] = f"the tag is kept (the operator allows tags where digests cannot be had): {e}"
        out.append(entry)
    return out


def audit_deployment(r: Review) -> Changes:
    """Fill artifactRef from workloadRef, and record who made each change of the spec."""
    # Metadata-only updates (and the operator's own) keep the record as it was.
    actor = r.username if r.spec_changed else r.annotations(old=True).get(A_CHANGED_BY)
    changes: Changes = {"annotations": {A_CHANGED_BY: actor} if r.annotations().get(A_CHANGED_BY) != actor
                        else {}}
    wl_name = (r.spec.get("workloadRef") or {}).get("name")
    ref = r.spec.get("artifactRef") or {}
    if not ref.get("name") and not ref.get("collection") and wl_name:
        wl = _get(Workload, WORKLOADS, r.namespace, wl_name)
        if wl is None:
            raise Denied(f"spec.workloadRef: Workload {wl_name} not found in namespace {r.namespace}")
        changes["spec"] = {"artifactRef": {"name": wl.artifact_name}}
    return changes


# --- what the pods would read: Secrets and ConfigMaps ---------------------------------------------------

def references(containers: list[Body], at: str, pull_secrets: list[Body] | None = None
               ) -> dict[tuple[str, str], str]:
    """The Secrets and ConfigMaps that containers read, and the image pull secrets: (resource, name) -> the
    first field naming it."""
    out: dict[tuple[str, str], str] = {}
    for i, ref in enumerate(pull_secrets or []):
        if (ref or {}).get("name"):
            out.setdefault(("secrets", ref["name"]), f"{at}imagePullSecrets[{i}]")
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
    spec = artifact.spec.to_dict()
    return references(spec["containers"], f"Artifact {artifact.metadata.name}: spec.", spec.get("imagePullSecrets"))


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
        refs = references(list(r.spec.get("containers") or []), "spec.", r.spec.get("imagePullSecrets"))
        before = references(list(r.old_spec.get("containers") or []), "spec.",
                            r.old_spec.get("imagePullSecrets")) if r.old else None
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
    ref = spec.artifact_ref
    if ref is None:
        raise Denied(f"Deployment {r.name}: spec.artifactRef is required (or a spec.workloadRef to take it from)")
    body = _kube().find_artifact(r.namespace, ref.name, ref.collection, ref.version)
    try:
        artifact = None if body is None else Artifact.model_validate(body)
    except pydantic.ValidationError:
        artifact = None
    if artifact is None:
        raise Denied(f"Deployment {r.name}: spec.artifactRef: {ref.describe()} not found in namespace {r.namespace}")
    art_name = artifact.metadata.name
    if not artifact.spec.registered:
        raise Denied(f"Deployment {r.name}: Artifact {art_name} is {Lifecycle.DRAFT}; register it first: "
                     + register_command(art_name))
    if r.operation == "CREATE" or (r.old_spec.get("artifactRef") or {}) != (r.spec.get("artifactRef") or {}):
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
    for key in ("annotations", "labels"):
        present = (obj.get("metadata") or {}).get(key)
        wanted = dict(changes.get(key, {}))
        if not wanted:
            continue
        if present is None:
            value = {k: v for k, v in wanted.items() if v is not None}
            if value:
                ops.append({"op": "add", "path": f"/metadata/{key}", "value": value})
            continue
        for k, v in wanted.items():
            path = f"/metadata/{key}/" + k.replace("~", "~0").replace("/", "~1")
            if v is None:
                if k in present:
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
