"""Pure builders: from an Artifact's containers and a Workload or Deployment, the child objects.

Nothing here talks to the API server, so everything here is unit-tested directly.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

GROUP = "kiln.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MANAGED_BY = "kiln"
RESTARTED_AT = "kiln.dev/restartedAt"
L_WORKLOAD = "kiln.dev/workload"
L_DEPLOYMENT = "kiln.dev/deployment"
L_ARTIFACT = "kiln.dev/artifact"
L_DIGEST = "kiln.dev/spec-digest"
L_REVISION = "kiln.dev/revision"
L_INDEX = "kiln.dev/index"
A_DIGEST = "kiln.dev/spec-digest"

Body = dict[str, Any]

# Restricted pod security (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
# user-supplied container specs carry no securityContext, so nothing can escalate privileges.
CONTAINER_SECURITY: Body = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "privileged": False,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY: Body = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
# The container fields an Artifact carries over to a pod; anything else is dropped.
CONTAINER_FIELDS = ("name", "image", "imagePullPolicy", "command", "args", "workingDir", "env", "envFrom",
                    "ports", "resources", "readinessProbe", "livenessProbe", "startupProbe")


def digest_label(digest: str) -> str:
    """A label-safe form of ``sha256:<hex>`` (label values allow 63 characters and no colon)."""
    return digest.removeprefix("sha256:")[:32]


def revision(digest: str, restarted_at: str | None) -> str:
    """What a pod generation is keyed on: the artifact spec and the last restart request."""
    return hashlib.sha256(f"{digest}|{restarted_at or ''}".encode()).hexdigest()[:8]


def workload_pod_name(workload: str, rev: str, index: int) -> str:
    return f"{workload[:50]}-{rev}-{index}"


def containers(spec_containers: list[Body]) -> list[Body]:
    """Kubernetes containers from an Artifact's container specs, hardened."""
    out = []
    for c in spec_containers:
        container = {k: copy.deepcopy(v) for k, v in c.items() if k in CONTAINER_FIELDS and v is not None}
        container["securityContext"] = copy.deepcopy(CONTAINER_SECURITY)
        out.append(container)
    return out


def pod_spec(spec_containers: list[Body]) -> Body:
    return {
        "containers": containers(spec_containers),
        "securityContext": copy.deepcopy(POD_SECURITY),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
    }


def common_labels(artifact: str, instance: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": artifact[:63],
        "app.kubernetes.io/instance": instance[:63],
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        L_ARTIFACT: artifact[:63],
    }


def workload_selector(workload: str) -> dict[str, str]:
    return {L_WORKLOAD: workload}


def workload_pod(workload: str, artifact: str, spec_containers: list[Body], digest: str, rev: str,
                 index: int) -> Body:
    """One pod of a Workload. Its name is deterministic: the same inputs give the same pod."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": workload_pod_name(workload, rev, index),
            "labels": {
                **common_labels(artifact, workload, "workload"),
                L_WORKLOAD: workload,
                L_DIGEST: digest_label(digest),
                L_REVISION: rev,
                L_INDEX: str(index),
            },
            "annotations": {A_DIGEST: digest},
        },
        "spec": pod_spec(spec_containers),
    }


def service_ports(spec_containers: list[Body]) -> list[Body]:
    ports = []
    seen = set()
    for c in spec_containers:
        for p in c.get("ports") or []:
            proto = p.get("protocol") or "TCP"
            key = (p["containerPort"], proto)
            if key in seen:
                continue
            seen.add(key)
            ports.append({
                "name": p.get("name") or f"{proto.lower()}-{p['containerPort']}",
                "port": p["containerPort"],
                "targetPort": p["containerPort"],
                "protocol": proto,
            })
    return ports


def service(name: str, artifact: str, component: str, selector: dict[str, str],
            spec_containers: list[Body]) -> Body | None:
    """A ClusterIP Service for the declared ports, or None when no container declares one."""
    ports = service_ports(spec_containers)
    if not ports:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {**common_labels(artifact, name, component), **selector}},
        "spec": {"type": "ClusterIP", "selector": dict(selector), "ports": ports},
    }


def owner_reference(body: Body, kind: str) -> Body:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
