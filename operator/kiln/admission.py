"""Admission webhooks: validation with messages that name the object and the field.

Handlers that need no API call are coroutines: they run in kopf's event loop, not in its thread
pool, so the reconcilers' work never queues in front of an admission review (kept well under the
webhook timeout).

The CRD schemas and CEL rules hold even while the operator is down; the webhooks add clear
messages and cross-object checks. They look at ``spec`` only: the operator's own writes
(finalizers, annotations, status) never meet a rule here (nolar/kopf#883).
"""

from __future__ import annotations

from typing import Any

import kopf
import pydantic

from kiln import builders as b
from kiln import kube
from kiln.api import ArtifactSpec, DeploymentSpec, WorkloadSpec
from kiln.conditions import now
from kiln.diff import changed_paths
from kiln.digest import locked_spec

Body = dict[str, Any]
CONFIG_NAME = "kiln.dev"
TIMEOUT_SECONDS = 5
A_REGISTERED_BY = "kiln.dev/registered-by"
A_REGISTERED_AT = "kiln.dev/registered-at"
# handler id -> (resource plural, operations). The ids are the webhook paths: keep them stable.
WEBHOOKS: dict[str, tuple[str, list[str]]] = {
    "validate-artifact": ("artifacts", ["CREATE", "UPDATE", "DELETE"]),
    "validate-workload": ("workloads", ["CREATE", "UPDATE"]),
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


def _errors(model: type[pydantic.BaseModel], spec: Body, kind: str, name: str) -> None:
    try:
        model.model_validate(spec)
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in e.errors())
        raise kopf.AdmissionError(f"{kind} {name}: {problems}", code=422) from None


@kopf.on.validate(b.GROUP, b.VERSION, "artifacts", id="validate-artifact",
                  operations=["CREATE", "UPDATE", "DELETE"])
async def validate_artifact(body: Body, old: Body | None, name: str, namespace: str, operation: str,
                      deployments_by_artifact: kopf.Index[tuple[str, str], str], **_: Any) -> None:
    if operation == "DELETE":
        users = sorted(set(deployments_by_artifact.get((namespace, name), [])))
        if users:
            raise kopf.AdmissionError(
                f"Artifact {name} is in use by Deployment {', '.join(users)} (deployments.kiln.dev): "
                f"switch or delete {'it' if len(users) == 1 else 'them'} first", code=409)
        return
    spec = dict(body.get("spec") or {})
    _errors(ArtifactSpec, spec, "Artifact", name)
    before = dict((old or {}).get("spec") or {})
    if operation != "UPDATE" or before.get("lifecycle") != "Registered":
        return
    if spec.get("lifecycle") != "Registered":
        raise kopf.AdmissionError(f"Artifact {name} is Registered: spec.lifecycle cannot return to Draft; "
                                  "create a new Artifact to iterate on", code=422)
    changed = changed_paths(locked_spec(before), locked_spec(spec))
    if changed:
        raise kopf.AdmissionError(
            f"Artifact {name} is Registered and its spec is locked: {', '.join(changed)} changed "
            "(only spec.displayName and spec.description may change; create a new Artifact instead)",
            code=422)


@kopf.on.mutate(b.GROUP, b.VERSION, "artifacts", id="record-registration", operations=["CREATE", "UPDATE"])
async def record_registration(body: Body, old: Body | None, patch: kopf.Patch, userinfo: dict[str, Any],
                        **_: Any) -> None:
    """Record who registered an artifact, and when, from the admission request: never from input."""
    registering = (body.get("spec") or {}).get("lifecycle") == "Registered" and \
        ((old or {}).get("spec") or {}).get("lifecycle") != "Registered"
    before = ((old or {}).get("metadata") or {}).get("annotations") or {}
    recorded = {A_REGISTERED_BY: str(userinfo.get("username") or "unknown"), A_REGISTERED_AT: now()} \
        if registering else {k: before.get(k) for k in (A_REGISTERED_BY, A_REGISTERED_AT)}
    current = (body.get("metadata") or {}).get("annotations") or {}
    for key, value in recorded.items():
        if current.get(key) != value:
            patch.setdefault("metadata", {}).setdefault("annotations", {})[key] = value


@kopf.on.validate(b.GROUP, b.VERSION, "workloads", id="validate-workload", operations=["CREATE", "UPDATE"])
async def validate_workload(spec: Body, old: Body | None, name: str, operation: str, **_: Any) -> None:
    _errors(WorkloadSpec, dict(spec), "Workload", name)
    if operation == "UPDATE" and old is not None:
        before = (old.get("spec") or {}).get("artifact")
        if before is not None and dict(spec).get("artifact") != before:
            raise kopf.AdmissionError(
                f"Workload {name}: spec.artifact is a creation shortcut and cannot change; "
                f"edit Artifact {name} instead (kubectl edit artifact.kiln.dev {name})", code=422)


def _spec_changed(operation: str, body: Body, old: Body | None) -> bool:
    return operation == "CREATE" or (old or {}).get("spec") != body.get("spec")


@kopf.on.mutate(b.GROUP, b.VERSION, "deployments", id="audit-deployment", operations=["CREATE", "UPDATE"])
def audit_deployment(body: Body, old: Body | None, operation: str, patch: kopf.Patch, userinfo: dict[str, Any],
                     namespace: str, **_: Any) -> None:
    """Fill artifactRef from workloadRef, and record who made each change of the spec."""
    spec = dict(body.get("spec") or {})
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    if _spec_changed(operation, body, old):
        actor: Any = str(userinfo.get("username") or "unknown")
    else:  # metadata-only updates (and the operator's own) keep the record as it was
        actor = ((old or {}).get("metadata", {}).get("annotations") or {}).get(A_CHANGED_BY)
    if annotations.get(A_CHANGED_BY) != actor:
        patch.setdefault("metadata", {}).setdefault("annotations", {})[A_CHANGED_BY] = actor
    if not (spec.get("artifactRef") or {}).get("name") and (spec.get("workloadRef") or {}).get("name"):
        wl_name = spec["workloadRef"]["name"]
        wl = kube.get_kiln("workloads", namespace, wl_name)
        if wl is None:
            raise kopf.AdmissionError(f"spec.workloadRef: Workload {wl_name} not found in namespace {namespace}",
                                      code=422)
        art = ((wl.get("spec") or {}).get("artifactRef") or {}).get("name") or wl_name
        patch.setdefault("spec", {})["artifactRef"] = {"name": art}


@kopf.on.validate(b.GROUP, b.VERSION, "deployments", id="validate-deployment", operations=["CREATE", "UPDATE"])
def validate_deployment(body: Body, old: Body | None, operation: str, name: str, namespace: str,
                        **_: Any) -> None:
    if not _spec_changed(operation, body, old):
        return  # metadata, finalizers: never block the operator's own writes
    spec = dict(body.get("spec") or {})
    _errors(DeploymentSpec, spec, "Deployment", name)
    art_name = (spec.get("artifactRef") or {}).get("name")
    if not art_name:
        raise kopf.AdmissionError(f"Deployment {name}: spec.artifactRef is required "
                                  "(or a spec.workloadRef to take it from)", code=422)
    artifact = kube.get_kiln("artifacts", namespace, art_name)
    if artifact is None:
        raise kopf.AdmissionError(f"Deployment {name}: spec.artifactRef: Artifact {art_name} not found "
                                  f"in namespace {namespace}", code=422)
    if (artifact.get("spec") or {}).get("lifecycle") != "Registered":
        raise kopf.AdmissionError(
            f"Deployment {name}: Artifact {art_name} is Draft; register it first: kubectl patch "
            f"artifact.kiln.dev {art_name} --type merge -p '{{\"spec\":{{\"lifecycle\":\"Registered\"}}}}'",
            code=422)


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
                  "metadata": meta, "webhooks": _webhooks(WEBHOOKS, client_config)
                  + _webhooks(GOVERNANCE_VALIDATING, client_config, failurePolicy="Fail")}
    mutating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": meta, "webhooks": _webhooks(MUTATING_WEBHOOKS, client_config, failurePolicy="Fail",
                                                        matchConditions=REGISTRATION_MATCH,
                                                        reinvocationPolicy="Never")
                + _webhooks(GOVERNANCE_MUTATING, client_config, failurePolicy="Fail", reinvocationPolicy="Never")}
    return validating, mutating
