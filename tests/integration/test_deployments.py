"""Governed Deployments: admission, the apps/v1 rollout, the audit trail, drift."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.integration.test_registration import register
from tests.integration.test_workloads import G, V, artifact, container, create, get, patch, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster


def deployment(name: str, *, artifact_ref: str | None = None, workload_ref: str | None = None,
               **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = dict(spec)
    if artifact_ref:
        s["artifactRef"] = {"name": artifact_ref}
    if workload_ref:
        s["workloadRef"] = {"name": workload_ref}
    return {"apiVersion": f"{G}/{V}", "kind": "Deployment", "metadata": {"name": name}, "spec": s}


def registered_artifact(kube: Kube, ns: str, name: str, image: str = "registry.example/app:1") -> str:
    create(kube, ns, artifact(name, [container(image)]))
    return str(register(kube, ns, name)["status"]["specDigest"])


def wait_ready(kube: Kube, ns: str, name: str, replicas: int = 1) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        d = get(kube, ns, "deployments", name)
        c = Kube.condition(d, "Ready")
        st = d.get("status") or {}
        ok = (c and c["status"] == "True" and st.get("readyReplicas") == replicas
              and st.get("observedGeneration") == d["metadata"]["generation"])
        return d if ok else None

    return kube.wait(check, what=f"deployment {ns}/{name} Ready with {replicas} pods", timeout=90)


def events(kube: Kube, ns: str, name: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in kube.core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},involvedObject.kind=Deployment").items
        if e.involved_object.api_version.startswith("kiln.dev")]


def test_admission_requires_a_registered_artifact(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, artifact("draft", [container()]))
    with pytest.raises(ApiException) as err:
        create(kube, namespace, deployment("prod", artifact_ref="draft"))
    msg = json.loads(err.value.body)["message"]
    assert "Artifact draft is Draft; register it first" in msg, msg
    with pytest.raises(ApiException) as err:
        create(kube, namespace, deployment("prod", artifact_ref="missing"))
    assert "Artifact missing not found" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        create(kube, namespace, deployment("prod", workload_ref="nope"))
    assert "Workload nope not found" in json.loads(err.value.body)["message"]
    assert not kube.custom.list_namespaced_custom_object(G, V, namespace, "deployments")["items"]


def test_deployment_runs_the_pinned_registered_spec(kube: Kube, operator: Operator, namespace: str) -> None:
    # This namespace's approval policy asks for no approvals (test_governance.py has them).
    kube.custom.create_namespaced_custom_object(G, V, namespace, "approvalpolicies", {
        "apiVersion": f"{G}/{V}", "kind": "ApprovalPolicy", "metadata": {"name": "default"}, "spec": {"rules": []}})
    digest = registered_artifact(kube, namespace, "app")
    dep = create(kube, namespace, deployment("prod", artifact_ref="app", replicas=2, importance="Critical",
                                             podDisruptionBudget={"minAvailable": 1}))
    d = wait_ready(kube, namespace, "prod", replicas=2)
    uid = get(kube, namespace, "artifacts", "app")["metadata"]["uid"]
    assert d["status"]["artifact"] == {"name": "app", "uid": uid, "specDigest": digest}
    for t in ("Ready", "Available"):
        assert Kube.condition(d, t)["status"] == "True", t
    assert Kube.condition(d, "Progressing")["status"] == "False"

    apps = kube.apps.read_namespaced_deployment("prod", namespace)
    assert apps.metadata.owner_references[0].uid == dep["metadata"]["uid"]
    assert apps.spec.replicas == 2
    tpl = apps.spec.template
    assert tpl.metadata.annotations["kiln.dev/spec-digest"] == digest
    pod_sc, c = tpl.spec.security_context, tpl.spec.containers[0]
    assert pod_sc.seccomp_profile.type == "RuntimeDefault" and pod_sc.run_as_non_root is True
    assert c.security_context.allow_privilege_escalation is False
    assert c.security_context.capabilities.drop == ["ALL"]
    assert c.image == "registry.example/app:1"
    svc = kube.core.read_namespaced_service("prod", namespace)
    assert svc.spec.selector == {"kiln.dev/deployment": "prod", "kiln.dev/owner-uid": d["metadata"]["uid"]}
    pdb = kube.policy.read_namespaced_pod_disruption_budget("prod", namespace)
    assert pdb.spec.min_available == 1 and pdb.metadata.owner_references[0].kind == "Deployment"

    history = d["status"]["history"]
    assert [h["action"] for h in history] == ["Created"]
    assert history[0]["actor"] == "kiln-admin" and history[0]["digest"] == digest
    # What the API server defaults in the apps/v1 Deployment (resources: {} and the like) is no hand
    # edit: it is not reverted (once it was, in a loop: a replace per watch event).
    assert "DriftReverted" not in [reason for reason, _ in events(kube, namespace, "prod")]
    assert kube.apps.read_namespaced_deployment("prod", namespace).metadata.generation == apps.metadata.generation
    out = kube.kubectl("get", "deployments.kiln.dev", "-n", namespace).stdout
    assert "Critical" in out and "app" in out and "True" in out, out


def test_switch_artifact_and_scale_are_rolled_out_and_audited(kube: Kube, operator: Operator,
                                                              namespace: str) -> None:
    registered_artifact(kube, namespace, "v1", "registry.example/app:1")
    d2 = registered_artifact(kube, namespace, "v2", "registry.example/app:2")
    create(kube, namespace, deployment("prod", artifact_ref="v1"))
    wait_ready(kube, namespace, "prod")
    patch(kube, namespace, "deployments", "prod", {"spec": {"artifactRef": {"name": "v2"}}})

    def rolled() -> bool:
        apps = kube.apps.read_namespaced_deployment("prod", namespace)
        return bool(apps.spec.template.spec.containers[0].image == "registry.example/app:2")

    kube.wait(rolled, what="apps/v1 Deployment rolled to v2")
    d = wait_ready(kube, namespace, "prod")
    assert d["status"]["artifact"] == {"name": "v2", "uid": get(kube, namespace, "artifacts", "v2")["metadata"]["uid"],
                                       "specDigest": d2}
    patch(kube, namespace, "deployments", "prod", {"spec": {"replicas": 3}})
    d = wait_ready(kube, namespace, "prod", replicas=3)
    actions = [(h["action"], h["artifact"], h["replicas"], h["actor"]) for h in d["status"]["history"]]
    assert actions == [("Created", "v1", 1, "kiln-admin"), ("ArtifactSwitched", "v2", 1, "kiln-admin"),
                       ("Scaled", "v2", 3, "kiln-admin")]
    reasons = {r for r, _ in events(kube, namespace, "prod")}
    assert {"Created", "ArtifactSwitched", "Scaled"} <= reasons
    # Switching to a Draft artifact is refused.
    create(kube, namespace, artifact("v3", [container("registry.example/app:3")]))
    with pytest.raises(ApiException) as err:
        patch(kube, namespace, "deployments", "prod", {"spec": {"artifactRef": {"name": "v3"}}})
    assert "Artifact v3 is Draft; register it first" in json.loads(err.value.body)["message"]


def test_workload_ref_alone_is_promoted(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("my-app", inline=[container()]))
    kube.wait(lambda: kube.exists(kube.custom.get_namespaced_custom_object, G, V, namespace, "artifacts", "my-app"),
              what="inline artifact created")
    register(kube, namespace, "my-app")
    created = create(kube, namespace, deployment("prod", workload_ref="my-app"))
    assert created["spec"]["artifactRef"] == {"name": "my-app"}
    assert created["spec"]["workloadRef"] == {"name": "my-app"}
    wait_ready(kube, namespace, "prod")


def test_hand_edits_of_the_apps_deployment_are_reverted(kube: Kube, operator: Operator, namespace: str) -> None:
    registered_artifact(kube, namespace, "app")
    create(kube, namespace, deployment("prod", artifact_ref="app"))
    wait_ready(kube, namespace, "prod")
    kube.kubectl("set", "image", "deployment.apps/prod", "app=registry.example/evil:1", "-n", namespace)
    kube.kubectl("scale", "deployment.apps/prod", "--replicas=4", "-n", namespace)

    def reverted() -> bool:
        apps = kube.apps.read_namespaced_deployment("prod", namespace)
        return bool(apps.spec.template.spec.containers[0].image == "registry.example/app:1"
                    and apps.spec.replicas == 1)

    kube.wait(reverted, what="hand edits reverted")
    kube.wait(lambda: any(r == "DriftReverted" for r, _ in events(kube, namespace, "prod")),
              what="DriftReverted event")
    wait_ready(kube, namespace, "prod")
    assert [h["action"] for h in get(kube, namespace, "deployments", "prod")["status"]["history"]] == ["Created"]
