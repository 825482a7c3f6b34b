"""Admission webhooks: validation with messages that name the object and the field, and the
mutations that record who registered an artifact or changed a Deployment.

Handlers are plain functions of a :class:`Review`; :mod:`kiln.webhook` serves them over TLS in a
process of its own, so a review never waits behind the reconcilers.

The CRD schemas and CEL rules hold even while the operator is down; the webhooks add clear
messages and cross-object checks. They look at ``spec`` only: the operator's own writes
(finalizers, annotations, status) never meet a rule here (nolar/kopf#883).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from kiln import builders as b
from kiln.api import ArtifactSpec, DeploymentSpec
from kiln.conditions import now
from kiln.diff import changed_paths
from kiln.digest import locked_spec

Body = dict[str, Any]
CONFIG_NAME = "kiln.dev"
TIMEOUT_SECONDS = 5
A_REGISTERED_BY = "kiln.dev/registered-by"
A_REGISTERED_AT = "kiln.dev/registered-at"
# handler id -> (resource plural, operations). The ids are the webhook paths: keep them stable.
# The CRD's schema and CEL rules run before any validating webhook and check every create and every
# Draft edit completely: a webhook call there would only add latency. So Workloads have no webhook,
# and an Artifact's is called for what the CRD cannot judge or explain alone (ARTIFACT_MATCH).
WEBHOOKS: dict[str, tuple[str, list[str]]] = {
    "validate-artifact": ("artifacts", ["UPDATE", "DELETE"]),
}
MUTATING_WEBHOOKS: dict[str, tuple[str, list[str]]] = {
    "record-registration": ("artifacts", ["CREATE", "UPDATE"]),
}
# Governed Deployments fail closed: no change to production goes unchecked or unaudited.
GOVERNANCE_VALIDATING: dict[str, tuple[str, list[str]]] = {
    "validate-deployment": ("deployments", ["CREATE", "UPDATE"]),
}
GOVERNANCE_MUTATING: dict[str, tuple[str, list[str]]] = {
    "audit-deployment": ("deployments", ["CREATE", "UPDATE"]),
}
A_CHANGED_BY = "kiln.dev/changed-by"


# Validation looks at spec only: updates that leave the spec alone (the operator's own annotation
# and finalizer writes, label edits) never reach the webhooks, so they can never be blocked by them.
SPEC_CHANGED = [{"name": "spec-changed",
                 "expression": "request.operation != 'UPDATE' || object.spec != oldObject.spec"}]
# An Artifact's deletion (is it in use by a Deployment?) and spec changes of a Registered one (the
# second line behind CEL's locks, naming every locked field changed); Draft edits never call it.
ARTIFACT_MATCH = [{"name": "deletion-or-registered-spec-change",
                   "expression": "request.operation == 'DELETE' || (object.spec != oldObject.spec"
                                 " && has(oldObject.spec.lifecycle) && oldObject.spec.lifecycle == 'Registered')"}]


def _annotation(obj: str, key: str) -> str:
    return (f"(has({obj}.metadata.annotations) && '{key}' in {obj}.metadata.annotations"
            f" ? {obj}.metadata.annotations['{key}'] : '')")


# The registration recorder is the one webhook that must run (failurePolicy: Fail): it alone knows
# who registered an artifact. These conditions keep it to the requests that register an artifact or
# touch its registration annotations, so everything else goes on while the operator is down.
REGISTRATION_MATCH = [
    {"name": "registers-or-touches-registration",
     "expression": (
         "(has(object.spec.lifecycle) && object.spec.lifecycle == 'Registered'"
         " && (oldObject == null || !has(oldObject.spec.lifecycle) || oldObject.spec.lifecycle != 'Registered'))"
         + "".join(f" || {_annotation('object', k)} != (oldObject == null ? '' : {_annotation('oldObject', k)})"
                   for k in (A_REGISTERED_BY, A_REGISTERED_AT)))},
]
# Auditing a Deployment: spec changes, and any attempt to rewrite the audit record.
AUDIT_MATCH = [
    {"name": "spec-or-audit-record-changed",
     "expression": (SPEC_CHANGED[0]["expression"] + f" || {_annotation('object', A_CHANGED_BY)}"
                    f" != {_annotation('oldObject', A_CHANGED_BY)}")},
]


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

    @classmethod
    def of(cls, request: Body) -> Review:
        obj = request.get("object") or request.get("oldObject") or {}
        return cls(operation=request["operation"], name=request.get("name") or obj["metadata"].get("name", ""),
                   namespace=request.get("namespace") or "", obj=obj, old=request.get("oldObject"),
                   username=str((request.get("userInfo") or {}).get("username") or "unknown"))

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


def _errors(model: type[pydantic.BaseModel], spec: Body, kind: str, name: str) -> None:
    try:
        model.model_validate(spec)
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in e.errors())
        raise Denied(f"{kind} {name}: {problems}") from None


def _kube() -> Any:
    """The API client, imported on first use: most reviews need none, and the webhook server's
    process stays small without it."""
    from kiln import kube

    return kube


def validate_artifact(r: Review) -> None:
    if r.operation == "DELETE":
        users = sorted(d["metadata"]["name"] for d in _kube().list_kiln("deployments", r.namespace)
                       if ((d.get("spec") or {}).get("artifactRef") or {}).get("name") == r.name)
        if users:
            raise Denied(f"Artifact {r.name} is in use by Deployment {', '.join(users)} (deployments.kiln.dev): "
                         f"switch or delete {'it' if len(users) == 1 else 'them'} first", code=409)
        return
    _errors(ArtifactSpec, r.spec, "Artifact", r.name)
    if r.operation != "UPDATE" or r.old_spec.get("lifecycle") != "Registered":
        return
    if r.spec.get("lifecycle") != "Registered":
        raise Denied(f"Artifact {r.name} is Registered: spec.lifecycle cannot return to Draft; "
                     "create a new Artifact to iterate on")
    changed = changed_paths(locked_spec(r.old_spec), locked_spec(r.spec))
    if changed:
        raise Denied(f"Artifact {r.name} is Registered and its spec is locked: {', '.join(changed)} changed "
                     "(only spec.displayName and spec.description may change; create a new Artifact instead)")


def record_registration(r: Review) -> Changes:
    """Record who registered an artifact, and when, from the admission request: never from input."""
    registering = r.spec.get("lifecycle") == "Registered" and r.old_spec.get("lifecycle") != "Registered"
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
        wl = _kube().get_kiln("workloads", r.namespace, wl_name)
        if wl is None:
            raise Denied(f"spec.workloadRef: Workload {wl_name} not found in namespace {r.namespace}")
        art = ((wl.get("spec") or {}).get("artifactRef") or {}).get("name") or wl_name
        changes["spec"] = {"artifactRef": {"name": art}}
    return changes


def validate_deployment(r: Review) -> None:
    if not r.spec_changed:
        return  # metadata, finalizers: never block the operator's own writes
    _errors(DeploymentSpec, r.spec, "Deployment", r.name)
    art_name = (r.spec.get("artifactRef") or {}).get("name")
    if not art_name:
        raise Denied(f"Deployment {r.name}: spec.artifactRef is required (or a spec.workloadRef to take it from)")
    artifact = _kube().get_kiln("artifacts", r.namespace, art_name)
    if artifact is None:
        raise Denied(f"Deployment {r.name}: spec.artifactRef: Artifact {art_name} not found "
                     f"in namespace {r.namespace}")
    if (artifact.get("spec") or {}).get("lifecycle") != "Registered":
        raise Denied(f"Deployment {r.name}: Artifact {art_name} is Draft; register it first: kubectl patch "
                     f"artifact.kiln.dev {art_name} --type merge -p '{{\"spec\":{{\"lifecycle\":\"Registered\"}}}}'")


# The webhook paths: each request is answered in its connection's thread of the webhook server.
HANDLERS: dict[str, Callable[[Review], Changes | None]] = {
    "validate-artifact": validate_artifact,
    "record-registration": record_registration,
    "audit-deployment": audit_deployment,
    "validate-deployment": validate_deployment,
}


def json_patch(obj: Body, changes: Changes) -> list[Body]:
    """RFC 6902 operations that apply a handler's changes to the object under review."""
    ops: list[Body] = []
    annotations = (obj.get("metadata") or {}).get("annotations")
    wanted = {k: v for k, v in changes.get("annotations", {}).items()}
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


def _webhooks(hooks: dict[str, tuple[str, list[str]]], client_config: Body, **extra: Any) -> list[Body]:
    out = []
    for hid, (plural, ops) in hooks.items():
        cc = dict(client_config)
        if "url" in cc:
            cc["url"] = cc["url"].rstrip("/") + f"/{hid}"
        else:
            cc["service"] = {**cc["service"], "path": f"/{hid}"}
        out.append({
            "name": f"{hid}.{b.GROUP}",
            "rules": [{"apiGroups": [b.GROUP], "apiVersions": [b.VERSION], "resources": [plural],
                       "operations": ops, "scope": "Namespaced"}],
            "clientConfig": cc,
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1"],
            **extra,
        })
    return out


def webhook_configurations(client_config: Body) -> tuple[Body, Body]:
    """The Validating- and MutatingWebhookConfiguration, the same for `kiln run` and the Helm chart.

    Validation uses ``failurePolicy: Ignore``: the CRD schemas and CEL rules keep the data safe while
    the operator is down, so an unreachable operator never blocks users' edits. Recording who
    registered an artifact uses ``Fail``, limited by ``matchConditions`` to the requests that need it.
    """
    meta = {"name": CONFIG_NAME, "labels": {"app.kubernetes.io/managed-by": b.MANAGED_BY}}
    validating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                  "metadata": meta, "webhooks": _webhooks(WEBHOOKS, client_config, matchConditions=ARTIFACT_MATCH)
                  + _webhooks(GOVERNANCE_VALIDATING, client_config, failurePolicy="Fail",
                              matchConditions=SPEC_CHANGED)}
    mutating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": meta, "webhooks": _webhooks(MUTATING_WEBHOOKS, client_config, failurePolicy="Fail",
                                                        matchConditions=REGISTRATION_MATCH,
                                                        reinvocationPolicy="Never")
                + _webhooks(GOVERNANCE_MUTATING, client_config, failurePolicy="Fail", matchConditions=AUDIT_MATCH,
                            reinvocationPolicy="Never")}
    return validating, mutating
