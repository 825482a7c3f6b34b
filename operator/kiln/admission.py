"""Admission webhooks: validation with messages that name the object and the field.

The CRD schemas and CEL rules hold even while the operator is down; the webhooks add clear
messages and cross-object checks. They look at ``spec`` only: the operator's own writes
(finalizers, annotations, status) never meet a rule here (nolar/kopf#883).
"""

from __future__ import annotations

from typing import Any

import kopf
import pydantic

from kiln import builders as b
from kiln.api import ArtifactSpec, WorkloadSpec

Body = dict[str, Any]
CONFIG_NAME = "kiln.dev"
TIMEOUT_SECONDS = 5
# handler id -> (resource plural, operations). The ids are the webhook paths: keep them stable.
WEBHOOKS: dict[str, tuple[str, list[str]]] = {
    "validate-artifact": ("artifacts", ["CREATE", "UPDATE"]),
    "validate-workload": ("workloads", ["CREATE", "UPDATE"]),
}


def _errors(model: type[pydantic.BaseModel], spec: Body, kind: str, name: str) -> None:
    try:
        model.model_validate(spec)
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in e.errors())
        raise kopf.AdmissionError(f"{kind} {name}: {problems}", code=422) from None


@kopf.on.validate(b.GROUP, b.VERSION, "artifacts", id="validate-artifact", operations=["CREATE", "UPDATE"])
def validate_artifact(spec: Body, name: str, **_: Any) -> None:
    _errors(ArtifactSpec, dict(spec), "Artifact", name)


@kopf.on.validate(b.GROUP, b.VERSION, "workloads", id="validate-workload", operations=["CREATE", "UPDATE"])
def validate_workload(spec: Body, old: Body | None, name: str, operation: str, **_: Any) -> None:
    _errors(WorkloadSpec, dict(spec), "Workload", name)
    if operation == "UPDATE" and old is not None:
        before = (old.get("spec") or {}).get("artifact")
        if before is not None and dict(spec).get("artifact") != before:
            raise kopf.AdmissionError(
                f"Workload {name}: spec.artifact is a creation shortcut and cannot change; "
                f"edit Artifact {name} instead (kubectl edit artifact.kiln.dev {name})", code=422)


def webhook_configuration(client_config: Body) -> Body:
    """The ValidatingWebhookConfiguration, the same for `kiln run` and the Helm chart.

    ``failurePolicy: Ignore``: the CRD schemas and CEL rules keep the data safe while the operator is
    down, so an unreachable operator never blocks users' edits.
    """
    webhooks = []
    for hid, (plural, ops) in WEBHOOKS.items():
        cc = dict(client_config)
        if "url" in cc:
            cc["url"] = cc["url"].rstrip("/") + f"/{hid}"
        else:
            cc["service"] = {**cc["service"], "path": f"/{hid}"}
        webhooks.append({
            "name": f"{hid}.{b.GROUP}",
            "rules": [{"apiGroups": [b.GROUP], "apiVersions": [b.VERSION], "resources": [plural],
                       "operations": ops, "scope": "Namespaced"}],
            "clientConfig": cc,
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1"],
        })
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": CONFIG_NAME, "labels": {"app.kubernetes.io/managed-by": b.MANAGED_BY}},
            "webhooks": webhooks}
