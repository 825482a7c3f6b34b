"""Pure builders: from an Artifact's containers and a Workload or Deployment, the child objects.

Nothing here talks to the API server, so everything here is unit-tested directly.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kiln.api.models import DEV_SERVICE_SUFFIX, Container, Endpoint, ObjectMeta
from kiln.names import (
    A_DIGEST,
    API_VERSION,
    L_ARTIFACT,
    L_DEPLOYMENT,
    L_DIGEST,
    L_IMPORTANCE,
    L_INDEX,
    L_OWNER_UID,
    L_REVISION,
    L_WORKLOAD,
    MANAGED_BY,
)

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


def spec_hash(spec: Body) -> str:
    """A short hash of a child's desired spec."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def digest_label(digest: str) -> str:
    """A label-safe form of ``sha256:<hex>`` (label values allow 63 characters and no colon)."""
    return digest.removeprefix("sha256:")[:32]


def revision(digest: str, restarted_at: str | None) -> str:
    """What a pod generation is keyed on: the artifact spec and the last restart request."""
    return hashlib.sha256(f"{digest}|{restarted_at or ''}".encode()).hexdigest()[:8]


def workload_pod_name(workload: str, rev: str, index: int) -> str:
    return f"{workload}-{rev}-{index}"


def containers(spec_containers: Sequence[Container]) -> list[Body]:
    """Kubernetes containers from an Artifact's container specs (which have no securityContext field), hardened."""
    return [{**c.to_dict(), "securityContext": copy.deepcopy(CONTAINER_SECURITY)} for c in spec_containers]


def pod_spec(spec_containers: Sequence[Container], pull_secrets: Sequence[str] = ()) -> Body:
    return {
        "containers": containers(spec_containers),
        "securityContext": copy.deepcopy(POD_SECURITY),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
        **({"imagePullSecrets": [{"name": s} for s in pull_secrets]} if pull_secrets else {}),
    }


def common_labels(artifact: str, instance: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": artifact[:63],
        "app.kubernetes.io/instance": instance[:63],
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        L_ARTIFACT: artifact[:63],
    }


def workload_service_name(workload: str) -> str:
    """Development Services carry a suffix: the production Service of a Deployment promoted from
    the Workload takes the plain name."""
    return f"{workload}{DEV_SERVICE_SUFFIX}"


def workload_selector(workload: str) -> dict[str, str]:
    return {L_WORKLOAD: workload}


def workload_pod(workload: str, artifact: str, spec_containers: Sequence[Container], digest: str, rev: str,
                 index: int, pull_secrets: Sequence[str] = ()) -> Body:
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
        "spec": pod_spec(spec_containers, pull_secrets),
    }


# Pod spec fields the API server or its admission plugins set, which a new pod must not carry.
ASSIGNED = ("nodeName", "priority", "preemptionPolicy")


def pod_like(template: Body, name: str, index: int) -> Body:
    """A Workload's pod made like ``template`` (one of its live pods, read from the API): the same spec
    and labels, another name and index."""
    meta = template["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {**meta.get("labels", {}), L_INDEX: str(index)},
                     "annotations": {A_DIGEST: (meta.get("annotations") or {}).get(A_DIGEST, "")}},
        "spec": {k: v for k, v in template["spec"].items() if k not in ASSIGNED},
    }


def service_ports(spec_containers: Sequence[Container]) -> list[Body]:
    ports = []
    seen = set()
    for c in spec_containers:
        for p in c.ports or []:
            proto = str(p.protocol)
            key = (p.container_port, proto)
            if key in seen:
                continue
            seen.add(key)
            ports.append({
                "name": p.name or f"{proto.lower()}-{p.container_port}",
                "port": p.container_port,
                "targetPort": p.container_port,
                "protocol": proto,
            })
    return ports


def service(name: str, artifact: str, component: str, selector: dict[str, str],
            spec_containers: Sequence[Container]) -> Body | None:
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


def endpoints(service: Body | None, namespace: str) -> list[Endpoint] | None:
    """In-cluster URLs of a Service's ports (None without a Service): http for TCP ports."""
    if service is None:
        return None
    host = f"{service['metadata']['name']}.{namespace}.svc"
    return [Endpoint(name=p["name"], url=f"{'http' if p['protocol'] == 'TCP' else p['protocol'].lower()}://"
                                         f"{host}:{p['port']}") for p in service["spec"]["ports"]]


def owner_reference(meta: ObjectMeta, kind: str) -> Body:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


# --- governed Deployments ---------------------------------------------------------------------

# Fields the API server would default, set explicitly so that the live object can be compared with
# the desired one: any key in the live pod spec or container that is not in the desired one was
# added by hand.
POD_DEFAULTS: Body = {"dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                      "terminationGracePeriodSeconds": 30}
CONTAINER_DEFAULTS: Body = {"terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File", "resources": {}}


def deployment_selector(name: str) -> dict[str, str]:
    """The apps/v1 Deployment's selector (immutable once created)."""
    return {L_DEPLOYMENT: name}


def deployment_pods(name: str, uid: str) -> dict[str, str]:
    """What the Service and the PodDisruptionBudget of a governed Deployment select: its own pods, by
    the Deployment's uid as well as its name (a pod that merely copies the name label is not one)."""
    return {L_DEPLOYMENT: name, L_OWNER_UID: uid}


def apps_deployment(name: str, uid: str, artifact: str, spec_containers: Sequence[Container], digest: str,
                    replicas: int, importance: str, images: Mapping[str, str] | None = None,
                    pull_secrets: Sequence[str] = (), revision_history_limit: int = 10) -> Body:
    """The apps/v1 Deployment that runs a governed Deployment's pinned, registered spec (``uid``: the
    governed Deployment's): each container's image as registration resolved it (``images``: container
    name -> ``repo@sha256:...``), so a tag pushed again later changes nothing here. Earlier rollouts'
    ReplicaSets are kept (``revision_history_limit``): a rollback to one reuses it."""
    pod = pod_spec(spec_containers, pull_secrets)
    pod.update(POD_DEFAULTS)
    for c in pod["containers"]:
        c["image"] = (images or {}).get(c["name"], c["image"])
        for k, v in CONTAINER_DEFAULTS.items():
            c.setdefault(k, v)
        c.setdefault("imagePullPolicy", "Always" if c["image"].endswith(":latest") or ":" not in
                     c["image"].rsplit("/", 1)[-1] else "IfNotPresent")
    labels = {**common_labels(artifact, name, "deployment"), **deployment_pods(name, uid),
              L_DIGEST: digest_label(digest), L_IMPORTANCE: importance}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": {A_DIGEST: digest}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": deployment_selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": revision_history_limit,
            "progressDeadlineSeconds": 600,
            "template": {"metadata": {"labels": labels, "annotations": {A_DIGEST: digest}}, "spec": pod},
        },
    }


def pod_disruption_budget(name: str, uid: str, artifact: str, min_available: int | str) -> Body:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": {**common_labels(artifact, name, "deployment"),
                                              **deployment_selector(name)}},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": deployment_pods(name, uid)}},
    }
