"""What a hostile but ordinary team member can do, tried through the API server as that user
(`--as`, with a namespaced role that grants kiln.dev objects only, status included, as a common
`resources: ["*"]` rule would): each attempt fails."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.test_registration import register
from tests.integration.test_workloads import artifact, container, create, get, pods, wait_running, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
USER = "mallory"


@pytest.fixture
def editor(kube: Kube, namespace: str) -> str:
    """A user who may do anything to kiln.dev objects in the namespace, their status included."""
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "kiln-editor", "namespace": namespace},
         "rules": [{"apiGroups": ["kiln.dev"], "resources": ["*"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]},
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
    for policy in ("kiln.dev-status", "kiln.dev-specs"):  # and the admission policies are there for every client
        assert kube.admission.read_validating_admission_policy(policy).spec.failure_policy == "Fail"
