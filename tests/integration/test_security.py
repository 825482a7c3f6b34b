"""What a hostile but ordinary team member can do, tried through the API server as that user
(`--as`, with a namespaced role that grants kiln.dev objects only, status included, as a common
`resources: ["*"]` rule would): each attempt fails."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kiln.api.digest import spec_digest
from kiln.api.models import ArtifactSpec
from kiln.controllers import builders as b
from tests.integration.test_deployments import deployment, registered_artifact, wait_ready
from tests.integration.test_registration import register
from tests.integration.test_workloads import artifact, container, create, get, patch, pods, wait_running, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
USER = "mallory"


@pytest.fixture
def editor(kube: Kube, namespace: str) -> str:
    """A user who may do anything to kiln.dev objects in the namespace, their status included, and register
    Artifacts."""
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "kiln-editor", "namespace": namespace},
         "rules": [{"apiGroups": ["kiln.dev"], "resources": ["*"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "register"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "kiln-editor", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kiln-editor"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]}]}))
    return USER


def as_user(kube: Kube, namespace: str, *args: str, input: str | None = None) -> Any:
    return kube.kubectl("--as", USER, "-n", namespace, *args, input=input, check=False)


def test_status_is_written_by_the_operator_only(kube: Kube, operator: Operator, namespace: str, editor: str) -> None:
    create(kube, namespace, artifact("model", [container()]))
    register(kube, namespace, "model")
    forged = {"status": {"registeredBy": "ceo", "specDigest": "sha256:" + "0" * 64}}
    assert as_user(kube, namespace, "auth", "can-i", "patch", "artifacts.kiln.dev", "--subresource=status"
                   ).stdout.strip() == "yes", "RBAC alone would let the user write status"

    def refused() -> str | None:
        r = as_user(kube, namespace, "patch", "artifact.kiln.dev", "model", "--subresource=status", "--type=merge",
                    "-p", json.dumps(forged))
        return r.stderr if r.returncode != 0 else None
    err = kube.wait(refused, what="the status policy to refuse the user's status write", timeout=30)
    assert "is written by the Kiln operator only" in err and "reconcile" in err, err
    status = get(kube, namespace, "artifacts", "model")["status"]
    assert status["registeredBy"] == "kiln-admin" and status["specDigest"] != forged["status"]["specDigest"]

    # A governed Deployment's audit trail and pin, likewise.
    create(kube, namespace, {"apiVersion": "kiln.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": "prod"},
                             "spec": {"artifactRef": {"name": "model"}}})
    kube.wait(lambda: get(kube, namespace, "deployments", "prod").get("status", {}).get("history"),
              what="the audit trail", timeout=60)
    r = as_user(kube, namespace, "patch", "deployment.kiln.dev", "prod", "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"history": [], "artifact": {"name": "model", "specDigest": "x"}}}))
    assert r.returncode != 0 and "written by the Kiln operator only" in r.stderr, r.stderr
    assert get(kube, namespace, "deployments", "prod")["status"]["history"][0]["actor"] == "kiln-admin"


@pytest.mark.parametrize("record", [
    {"failure": True, "retries": 1, "message": "swallowed"},
    {"delayed": "2099-01-01T00:00:00.000000+00:00", "retries": 1},
], ids=["failure", "delayed"])
def test_progress_annotations_cannot_swallow_or_postpone_a_reconcile(
        kube: Kube, operator: Operator, namespace: str, editor: str, record: dict[str, Any]) -> None:
    """kopf's retry records are the operator's memory, not annotations a user can write."""
    create(kube, namespace, workload("w", inline=[container()], replicas=1))
    wait_running(kube, namespace, "w")
    crafted = {"started": "2026-01-01T00:00:00.000000+00:00", "purpose": "update", **record}
    r = as_user(kube, namespace, "patch", "workload.kiln.dev", "w", "--type=merge", "-p", json.dumps({
        "metadata": {"annotations": {"operator.kiln.dev/workload_changed": json.dumps(crafted)}},
        "spec": {"replicas": 2}}))
    assert r.returncode == 0, r.stderr
    wait_running(kube, namespace, "w", replicas=2, timeout=30)
    assert len(pods(kube, namespace, "w")) == 2


def test_the_operator_writes_no_progress_annotations(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("w", inline=[container()]))
    wait_running(kube, namespace, "w")
    annotations = get(kube, namespace, "workloads", "w")["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("operator.kiln.dev/")], annotations
    # and the admission policies are there for every client
    for policy in ("kiln.dev-status", "kiln.dev-specs", "kiln.dev-no-orphans"):
        assert kube.admission.read_validating_admission_policy(policy).spec.failure_policy == "Fail"


def apply_as_user(kube: Kube, namespace: str, verb: str, body: dict[str, Any]) -> Any:
    return as_user(kube, namespace, verb, "-f", "-", input=json.dumps(body))


def image_in_production(kube: Kube, namespace: str, name: str) -> str:
    return str(kube.apps.read_namespaced_deployment(name, namespace).spec.template.spec.containers[0].image)


def test_a_reused_artifact_name_does_not_reach_production(kube: Kube, operator: Operator, namespace: str,
                                                          editor: str) -> None:
    """Switch away, delete the Artifact, recreate it under the same name with other content, switch back:
    production keeps what it ran until the new object is promoted by its uid, and the trail says so."""
    registered_artifact(kube, namespace, "model", image="registry.example/model:1")
    registered_artifact(kube, namespace, "other", image="registry.example/other:1")
    create(kube, namespace, deployment("prod", artifact_ref="model"))
    wait_ready(kube, namespace, "prod")
    first_uid = get(kube, namespace, "deployments", "prod")["status"]["artifact"]["uid"]
    assert first_uid == get(kube, namespace, "artifacts", "model")["metadata"]["uid"]

    assert as_user(kube, namespace, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                   '{"spec": {"artifactRef": {"name": "other"}}}').returncode == 0
    kube.wait(lambda: image_in_production(kube, namespace, "prod") == "registry.example/other:1",
              what="the switch to other")
    r = as_user(kube, namespace, "delete", "artifact.kiln.dev", "model")
    assert r.returncode == 0, r.stderr
    r = apply_as_user(kube, namespace, "create", artifact("model", [container("registry.example/evil:1")],
                                                          lifecycle="Registered"))
    assert r.returncode == 0, r.stderr
    new_uid = get(kube, namespace, "artifacts", "model")["metadata"]["uid"]
    assert as_user(kube, namespace, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                   '{"spec": {"artifactRef": {"name": "model"}}}').returncode == 0

    def blocked() -> dict[str, Any] | None:
        d = get(kube, namespace, "deployments", "prod")
        c = Kube.condition(d, "Ready")
        return c if c and c["reason"] == "ArtifactReplaced" else None
    c = kube.wait(blocked, what="the reused name to be refused")
    assert new_uid in c["message"] and first_uid in c["message"], c["message"]
    assert image_in_production(kube, namespace, "prod") == "registry.example/other:1", "production unchanged"

    # Promoting the new object by its uid is an explicit, audited change.
    assert as_user(kube, namespace, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p", json.dumps(
        {"spec": {"artifactRef": {"name": "model", "uid": new_uid}}})).returncode == 0
    kube.wait(lambda: image_in_production(kube, namespace, "prod") == "registry.example/evil:1",
              what="the promoted new object")
    last = get(kube, namespace, "deployments", "prod")["status"]["history"][-1]
    assert (last["action"], last["actor"], last["artifactUid"]) == ("ArtifactSwitched", USER, new_uid)
    assert f"uid {first_uid} -> {new_uid}" in last["message"]


def test_the_audit_entry_is_written_before_the_rollout(kube: Kube, operator: Operator, namespace: str,
                                                       editor: str) -> None:
    """A child the API refuses (a PodDisruptionBudget of 150%: the CRD's pattern admits it, policy/v1 does
    not) is reported in a condition, and the change that rolled out is in the trail, credited to its author."""
    registered_artifact(kube, namespace, "model")
    r = apply_as_user(kube, namespace, "create", deployment("prod", artifact_ref="model",
                                                            podDisruptionBudget={"minAvailable": "150%"}))
    assert r.returncode == 0, r.stderr

    def rejected() -> dict[str, Any] | None:
        d = get(kube, namespace, "deployments", "prod")
        c = Kube.condition(d, "Ready")
        return d if c and c["reason"] == "ChildRejected" else None
    d = kube.wait(rejected, what="the PodDisruptionBudget's refusal in the conditions")
    assert "minAvailable" in Kube.condition(d, "Ready")["message"]
    assert [(h["action"], h["actor"]) for h in d["status"]["history"]] == [("Created", USER)]
    assert kube.apps.read_namespaced_deployment("prod", namespace), "the rollout happened, and is on record"
    # The next change is its own entry, credited to its own author.
    patch(kube, namespace, "deployments", "prod", {"spec": {"replicas": 2, "podDisruptionBudget": {"minAvailable": 1}}})
    d = wait_ready(kube, namespace, "prod", replicas=2)
    assert [(h["action"], h["actor"]) for h in d["status"]["history"]] == [("Created", USER), ("Scaled", "kiln-admin")]


def test_a_governed_deployment_cannot_be_orphaned(kube: Kube, operator: Operator, namespace: str, editor: str) -> None:
    registered_artifact(kube, namespace, "model")
    create(kube, namespace, deployment("prod", artifact_ref="model"))
    wait_ready(kube, namespace, "prod")
    r = as_user(kube, namespace, "delete", "deployment.kiln.dev", "prod", "--cascade=orphan")
    assert r.returncode != 0 and "orphaned children" in r.stderr, r.stderr
    r = as_user(kube, namespace, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                '{"metadata": {"finalizers": ["orphan"]}}')
    assert r.returncode != 0 and "orphan finalizer" in r.stderr, r.stderr
    assert get(kube, namespace, "deployments", "prod")["status"]["history"], "still governed, its trail intact"
    r = as_user(kube, namespace, "delete", "deployment.kiln.dev", "prod", "--cascade=background")
    assert r.returncode == 0, r.stderr


def _secret(kube: Kube, namespace: str, name: str) -> None:
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {"password": "s3cret"}})


def test_kiln_reads_no_secret_for_a_user_who_may_not(kube: Kube, operator: Operator, namespace: str,
                                                      editor: str) -> None:
    """Pods read Secrets and ConfigMaps for whoever made them run: a user who may not get a Secret can
    neither reference it in an Artifact or a Workload nor run or promote an Artifact that does."""
    _secret(kube, namespace, "db")
    _secret(kube, namespace, "public")
    kube.kubectl("-n", namespace, "create", "role", "read-public", "--verb=get", "--resource=secrets",
                 "--resource-name=public")
    kube.kubectl("-n", namespace, "create", "rolebinding", "read-public", "--role=read-public", f"--user={USER}")
    secret_env = container(env=[{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}])

    r = apply_as_user(kube, namespace, "create", workload("w", inline=[secret_env]))
    assert r.returncode != 0, "an inline artifact reading a Secret the user may not read"
    assert "spec.artifact.containers[0].env[0].valueFrom.secretKeyRef" in r.stderr and "Secret db" in r.stderr, r.stderr
    r = apply_as_user(kube, namespace, "create", artifact("a", [container(envFrom=[{"secretRef": {"name": "db"}}])]))
    assert r.returncode != 0 and "spec.containers[0].envFrom[0].secretRef" in r.stderr, r.stderr
    r = apply_as_user(kube, namespace, "create", artifact("cm", [container(envFrom=[{"configMapRef": {"name": "x"}}])]))
    assert r.returncode != 0 and "ConfigMap x" in r.stderr, r.stderr

    # One that someone else made: not runnable, nor promotable, by this user.
    create(kube, namespace, artifact("with-secret", [secret_env]))
    r = apply_as_user(kube, namespace, "create", workload("w", ref="with-secret"))
    assert r.returncode != 0 and "Artifact with-secret: spec.containers[0].env[0]" in r.stderr, r.stderr
    register(kube, namespace, "with-secret")
    r = apply_as_user(kube, namespace, "create", deployment("prod", artifact_ref="with-secret"))
    assert r.returncode != 0 and "may not get Secret db" in r.stderr, r.stderr

    # The Secret the user may read: allowed, and it runs.
    readable = container(env=[{"name": "P", "valueFrom": {"secretKeyRef": {"name": "public", "key": "password"}}}])
    r = apply_as_user(kube, namespace, "create", workload("ok", inline=[readable]))
    assert r.returncode == 0, r.stderr
    wait_running(kube, namespace, "ok")


def _first_pod_name(name: str, containers: list[dict[str, Any]]) -> str:
    digest = spec_digest(ArtifactSpec.model_validate({"containers": containers}))
    return b.workload_pod_name(name, b.revision(digest, None), 0)


def test_children_are_recognised_by_owner_not_by_label(kube: Kube, operator: Operator, namespace: str,
                                                       editor: str) -> None:
    """A pod carrying a Workload's label is not its pod: never deleted; one squatting the name of a pod it
    needs is reported, not adopted; an Artifact made in advance under the name of a Workload's inline
    artifact is not run; a governed Service selects its Deployment's pods by uid."""
    c = [container()]
    foreign = {"metadata": {"labels": {"kiln.dev/workload": "w"}},
               "spec": {"containers": [{"name": "x", "image": "registry.example/x:1"}]}}
    kube.core.create_namespaced_pod(namespace, {**foreign, "metadata": {**foreign["metadata"], "name": "bystander"}})
    squat = _first_pod_name("w", c)
    kube.core.create_namespaced_pod(namespace, {**foreign, "metadata": {**foreign["metadata"], "name": squat}})
    r = apply_as_user(kube, namespace, "create", artifact("w", c))  # the Draft an inline artifact would make
    assert r.returncode == 0, r.stderr
    create(kube, namespace, workload("w", ref="w", replicas=2))

    def conflict() -> dict[str, Any] | None:
        cond = Kube.condition(get(kube, namespace, "workloads", "w"), "Ready")
        return cond if cond and cond["reason"] == "NameConflict" else None
    assert squat in kube.wait(conflict, what="the squatted pod name reported")["message"]
    kube.wait(lambda: len([p for p in pods(kube, namespace, "w") if p.metadata.owner_references]) == 1,
              what="the Workload's other pod")
    live = {p.metadata.name: p for p in pods(kube, namespace, "w")}
    assert "bystander" in live and not live["bystander"].metadata.owner_references, "not deleted, not adopted"
    assert not live[squat].metadata.owner_references

    # Somebody else's Artifact under the name an inline artifact takes: nothing runs.
    r = apply_as_user(kube, namespace, "create", artifact("v", [container("registry.example/evil:1")]))
    assert r.returncode == 0, r.stderr
    create(kube, namespace, workload("v", inline=c))

    def refused() -> dict[str, Any] | None:
        cond = Kube.condition(get(kube, namespace, "workloads", "v"), "Ready")
        return cond if cond and cond["reason"] == "ArtifactConflict" else None
    kube.wait(refused, what="the foreign Artifact refused")
    assert pods(kube, namespace, "v") == []

    # The governed Service: its Deployment's pods, by uid.
    registered_artifact(kube, namespace, "model")
    create(kube, namespace, deployment("prod", artifact_ref="model"))
    uid = get(kube, namespace, "deployments", "prod")["metadata"]["uid"]
    svc = kube.wait(lambda: kube.exists(kube.core.read_namespaced_service, "prod", namespace) and
                    kube.core.read_namespaced_service("prod", namespace), what="the governed Service")
    assert svc.spec.selector == {"kiln.dev/deployment": "prod", "kiln.dev/owner-uid": uid}
