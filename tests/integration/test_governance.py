"""Governance through the API server, users impersonated (`--as`) with the personas' roles Kiln ships:
who may register, approvals by importance, self-approval, stale and expired requests, rejections, and
what happens while the webhooks are down. The first test is docs/governance.md's worked example."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.test_deployments import deployment
from tests.integration.test_workloads import artifact, container, get, patch, wait_running, workload
from tests.kube import Kube, Operator, listening

pytestmark = pytest.mark.cluster
DEV, REGISTRAR, DEPLOYER, APPROVER, APPROVER2, OUTSIDER = "dora", "rita", "dan", "alice", "bob", "eve"


@pytest.fixture
def team(kube: Kube, operator: Operator, namespace: str) -> str:
    """The personas, bound in the namespace to the ClusterRoles Kiln installs; eve may create Approvals
    but has not the verb approve."""
    for user, persona in ((DEV, "developer"), (REGISTRAR, "registrar"), (DEPLOYER, "deployer"),
                          (APPROVER, "approver"), (APPROVER2, "approver"), (OUTSIDER, "viewer")):
        kube.kubectl("-n", namespace, "create", "rolebinding", f"{user}-{persona}", f"--clusterrole=kiln-{persona}",
                     f"--user={user}")
    kube.kubectl("-n", namespace, "create", "role", "approvals-writer", "--verb=create",
                 "--resource=approvals.kiln.dev")
    kube.kubectl("-n", namespace, "create", "rolebinding", "eve-approvals", "--role=approvals-writer",
                 f"--user={OUTSIDER}")
    return namespace


def kubectl_as(kube: Kube, user: str, namespace: str, *args: str, body: dict[str, Any] | None = None) -> Any:
    return kube.kubectl("--as", user, "-n", namespace, *args, input=None if body is None else json.dumps(body),
                        check=False)


def approval(dep: str, generation: int, decision: str = "Approve", comment: str = "",
             approver: str | None = None, deletion: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"deploymentRef": {"name": dep}, "generation": generation, "decision": decision,
                            "deletion": deletion}
    if comment:
        spec["comment"] = comment
    if approver:
        spec["approver"] = approver
    return {"apiVersion": "kiln.dev/v1alpha1", "kind": "Approval",
            "metadata": {"name": f"{dep}-{generation}-{uuid.uuid4().hex[:6]}"}, "spec": spec}


def decide(kube: Kube, user: str, namespace: str, dep: str, decision: str = "Approve", comment: str = "",
           generation: int | None = None, approver: str | None = None, deletion: bool = False) -> Any:
    gen = generation or get(kube, namespace, "deployments", dep)["metadata"]["generation"]
    return kubectl_as(kube, user, namespace, "create", "-f", "-",
                      body=approval(dep, gen, decision, comment, approver, deletion))


def approved_condition(kube: Kube, namespace: str, dep: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        d = get(kube, namespace, "deployments", dep)
        c = Kube.condition(d, "Approved")
        ok = c and c["reason"] == reason and c.get("observedGeneration") == d["metadata"]["generation"]
        return c if ok else None

    return kube.wait(check, what=f"Deployment {dep} Approved reason {reason}", timeout=timeout)


def image_in_production(kube: Kube, namespace: str, dep: str) -> str | None:
    if not kube.exists(kube.apps.read_namespaced_deployment, dep, namespace):
        return None
    return str(kube.apps.read_namespaced_deployment(dep, namespace).spec.template.spec.containers[0].image)


def policy(kube: Kube, namespace: str, spec: dict[str, Any]) -> None:
    """The namespace's ApprovalPolicy (named default)."""
    kube.custom.create_namespaced_custom_object("kiln.dev", "v1alpha1", namespace, "approvalpolicies", {
        "apiVersion": "kiln.dev/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": "default"}, "spec": spec})


def history(kube: Kube, namespace: str, dep: str) -> list[tuple[str, str]]:
    return [(h["action"], h["actor"]) for h in get(kube, namespace, "deployments", dep)["status"].get("history") or []]


def registered_by(kube: Kube, namespace: str, name: str, user: str, image: str) -> None:
    assert kubectl_as(kube, DEV, namespace, "create", "-f", "-",
                      body=artifact(name, [container(image)])).returncode == 0
    r = kubectl_as(kube, user, namespace, "patch", "artifact.kiln.dev", name, "--type=merge", "-p",
                   '{"spec": {"lifecycle": "Registered"}}')
    assert r.returncode == 0, r.stderr


def test_worked_example(kube: Kube, team: str) -> None:
    """docs/governance.md: a developer iterates, a lead registers, a deployer promotes a High-importance
    Deployment, an approver approves, and the history shows them all."""
    ns = team
    # The developer iterates on a Workload with an inline artifact.
    r = kubectl_as(kube, DEV, ns, "create", "-f", "-", body=workload("scorer", inline=[container()]))
    assert r.returncode == 0, r.stderr
    wait_running(kube, ns, "scorer")
    # Registering is the registrar's: not the developer's.
    r = kubectl_as(kube, DEV, ns, "patch", "artifact.kiln.dev", "scorer", "--type=merge", "-p",
                   '{"spec": {"lifecycle": "Registered"}}')
    assert r.returncode != 0, "the developer registered"
    assert "registering needs the verb register on artifacts.kiln.dev in namespace " + ns in r.stderr, r.stderr
    r = kubectl_as(kube, REGISTRAR, ns, "patch", "artifact.kiln.dev", "scorer", "--type=merge", "-p",
                   '{"spec": {"lifecycle": "Registered"}}')
    assert r.returncode == 0, r.stderr
    art = kube.wait(lambda: get(kube, ns, "artifacts", "scorer").get("status", {}).get("registeredBy") and
                    get(kube, ns, "artifacts", "scorer"), what="the registration")
    assert art["status"]["registeredBy"] == REGISTRAR

    # The deployer promotes it, High importance: it waits for an approval, nothing runs yet.
    r = kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                   body=deployment("scorer-prod", workload_ref="scorer", importance="High"))
    assert r.returncode == 0, r.stderr
    c = approved_condition(kube, ns, "scorer-prod", "AwaitingApproval")
    assert "needs 1 more approval(s)" in c["message"] and DEPLOYER in c["message"], c["message"]
    assert image_in_production(kube, ns, "scorer-prod") is None, "no apps/v1 Deployment before the approval"
    r = kube.kubectl("-n", ns, "get", "kdep", "scorer-prod")
    assert "APPROVED" in r.stdout.splitlines()[0] and "False" in r.stdout.splitlines()[1], r.stdout

    # Nobody approves their own change; approving needs the verb approve.
    r = kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-", body=approval("scorer-prod", 1))
    assert r.returncode != 0, "the deployer approved their own change"
    r = decide(kube, DEPLOYER, ns, "scorer-prod")
    assert r.returncode != 0
    r = decide(kube, OUTSIDER, ns, "scorer-prod")
    assert r.returncode != 0 and "needs the verb approve on deployments.kiln.dev" in r.stderr, r.stderr

    # The approver approves (claiming to be someone else changes nothing: admission stamps the approver).
    r = decide(kube, APPROVER, ns, "scorer-prod", comment="looks good", approver="ceo")
    assert r.returncode == 0, r.stderr
    approvals = json.loads(kube.kubectl("-n", ns, "get", "approvals", "-o", "json").stdout)["items"]
    assert [a["spec"]["approver"] for a in approvals] == [APPROVER]
    r = kube.kubectl("-n", ns, "wait", "--for=condition=Approved", "--timeout=60s", "deployment.kiln.dev/scorer-prod")
    assert r.returncode == 0, r.stderr
    kube.wait(lambda: image_in_production(kube, ns, "scorer-prod") == "registry.example/app:1",
              what="the approved rollout")
    assert history(kube, ns, "scorer-prod") == [("ApprovalRequested", DEPLOYER), ("Approved", APPROVER),
                                                 ("Created", DEPLOYER)]
    out = kube.kubectl("-n", ns, "get", "approvals").stdout
    assert "scorer-prod" in out and APPROVER in out and "Approve" in out, out
    events = {e.reason for e in kube.core.list_namespaced_event(ns).items}
    assert {"ApprovalRequested", "Approved", "Created"} <= events


def test_a_critical_switch_needs_two_approvals_and_a_reject_ends_it(kube: Kube, team: str) -> None:
    ns = team
    for name, image in (("v1", "registry.example/app:1"), ("v2", "registry.example/app:2"),
                        ("v3", "registry.example/app:3")):
        registered_by(kube, ns, name, REGISTRAR, image)
    r = kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                   body=deployment("prod", artifact_ref="v1", importance="Critical"))
    assert r.returncode == 0, r.stderr
    approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert decide(kube, APPROVER, ns, "prod").returncode == 0
    approved_condition(kube, ns, "prod", "AwaitingApproval")  # one of two
    assert decide(kube, APPROVER, ns, "prod").returncode == 0  # the same approver again counts once
    c = approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert "needs 1 more approval(s)" in c["message"], c["message"]
    assert decide(kube, APPROVER2, ns, "prod").returncode == 0
    approved_condition(kube, ns, "prod", "Approved")
    kube.wait(lambda: image_in_production(kube, ns, "prod") == "registry.example/app:1", what="v1 in production")

    # The switch to v2 waits: v1 keeps serving until two distinct approvals.
    r = kubectl_as(kube, DEPLOYER, ns, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                   '{"spec": {"artifactRef": {"name": "v2"}}}')
    assert r.returncode == 0, r.stderr
    approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert decide(kube, APPROVER, ns, "prod").returncode == 0
    approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert image_in_production(kube, ns, "prod") == "registry.example/app:1"
    assert decide(kube, APPROVER2, ns, "prod").returncode == 0
    kube.wait(lambda: image_in_production(kube, ns, "prod") == "registry.example/app:2", what="v2 in production")

    # A Reject ends the request: v2 keeps serving.
    r = kubectl_as(kube, DEPLOYER, ns, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                   '{"spec": {"artifactRef": {"name": "v3"}}}')
    assert r.returncode == 0, r.stderr
    approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert decide(kube, APPROVER2, ns, "prod", "Reject", comment="not this week").returncode == 0
    c = approved_condition(kube, ns, "prod", "Rejected")
    assert APPROVER2 in c["message"] and "not this week" in c["message"], c["message"]
    assert image_in_production(kube, ns, "prod") == "registry.example/app:2"
    assert ("Rejected", APPROVER2) in history(kube, ns, "prod")
    assert decide(kube, APPROVER, ns, "prod").returncode == 0  # a late approval changes nothing
    approved_condition(kube, ns, "prod", "Rejected")
    assert image_in_production(kube, ns, "prod") == "registry.example/app:2"
    # Back to what production runs: nothing waits any more.
    assert kubectl_as(kube, DEPLOYER, ns, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                      '{"spec": {"artifactRef": {"name": "v2"}}}').returncode == 0
    approved_condition(kube, ns, "prod", "NoPendingChange")


def test_an_approval_of_a_stale_generation_is_refused(kube: Kube, team: str) -> None:
    ns = team
    registered_by(kube, ns, "v1", REGISTRAR, "registry.example/app:1")
    assert kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                      body=deployment("prod", artifact_ref="v1", importance="High")).returncode == 0
    approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert kubectl_as(kube, DEPLOYER, ns, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                      '{"spec": {"replicas": 2}}').returncode == 0
    r = decide(kube, APPROVER, ns, "prod", generation=1)
    assert r.returncode != 0 and "generation 1 is not the current change" in r.stderr, r.stderr
    # An Approval is immutable once created.
    assert decide(kube, APPROVER, ns, "prod").returncode == 0
    name = json.loads(kube.kubectl("-n", ns, "get", "approvals", "-o", "json").stdout)["items"][0]["metadata"]["name"]
    r = kube.kubectl("-n", ns, "patch", "approval.kiln.dev", name, "--type=merge", "-p",
                     '{"spec": {"decision": "Reject"}}', check=False)
    assert r.returncode != 0 and "an Approval is immutable" in r.stderr, r.stderr


def test_a_request_expires(kube: Kube, team: str) -> None:
    ns = team
    policy(kube, ns, {"rules": [{"importance": "Moderate", "approvals": 1}], "expireAfterSeconds": 2})
    registered_by(kube, ns, "v1", REGISTRAR, "registry.example/app:1")
    assert kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                      body=deployment("prod", artifact_ref="v1")).returncode == 0  # Moderate: this policy asks one
    c = approved_condition(kube, ns, "prod", "Expired", timeout=60)
    assert "was not approved within 2s" in c["message"]
    assert ("Expired", "kiln") in history(kube, ns, "prod")
    assert image_in_production(kube, ns, "prod") is None
    # Low needs none under this policy: it rolls out at once.
    patch(kube, ns, "approvalpolicies", "default", {"spec": {"rules": [{"importance": "Moderate", "approvals": 1},
                                                                       {"importance": "Low", "approvals": 0}]}})
    assert kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                      body=deployment("low", artifact_ref="v1", importance="Low")).returncode == 0
    approved_condition(kube, ns, "low", "NotRequired")


def test_registration_and_approvals_fail_closed_while_the_webhooks_are_down(kube: Kube, team: str,
                                                                           operator: Operator) -> None:
    ns = team
    registered_by(kube, ns, "v1", REGISTRAR, "registry.example/app:1")
    assert kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                      body=deployment("prod", artifact_ref="v1", importance="High")).returncode == 0
    approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert kubectl_as(kube, DEV, ns, "create", "-f", "-", body=artifact("draft", [container()])).returncode == 0
    port = operator.webhook_port
    operator.kill()  # a crash: the webhook configurations stay, nothing answers them
    try:
        kube.wait(lambda: not listening(port), what="the webhook server to follow the operator")
        r = kubectl_as(kube, REGISTRAR, ns, "patch", "artifact.kiln.dev", "draft", "--type=merge", "-p",
                       '{"spec": {"lifecycle": "Registered"}}')
        assert r.returncode != 0 and "failed calling webhook" in r.stderr, r.stderr
        r = decide(kube, APPROVER, ns, "prod")
        assert r.returncode != 0 and "failed calling webhook" in r.stderr, r.stderr
        # Draft iteration goes on.
        r = kubectl_as(kube, DEV, ns, "patch", "artifact.kiln.dev", "draft", "--type=merge", "-p",
                       json.dumps({"spec": {"containers": [container("registry.example/app:2")]}}))
        assert r.returncode == 0, r.stderr
    finally:
        operator.start()
    assert get(kube, ns, "artifacts", "draft")["spec"]["lifecycle"] == "Draft"
    assert json.loads(kube.kubectl("-n", ns, "get", "approvals", "-o", "json").stdout)["items"] == []


def test_deleting_a_governed_deployment_waits_for_approvals(kube: Kube, team: str) -> None:
    """The Delete trigger: a High Deployment is deleted once someone other than who deletes it has
    approved its deletion; a namespace being deleted still takes it along."""
    ns = team
    registered_by(kube, ns, "v1", REGISTRAR, "registry.example/app:1")
    assert kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                      body=deployment("prod", artifact_ref="v1", importance="High")).returncode == 0
    approved_condition(kube, ns, "prod", "AwaitingApproval")
    assert decide(kube, APPROVER, ns, "prod").returncode == 0
    approved_condition(kube, ns, "prod", "Approved")
    r = kubectl_as(kube, DEPLOYER, ns, "delete", "deployment.kiln.dev", "prod")
    assert r.returncode != 0 and "needs 1 approval(s) of its deletion" in r.stderr, r.stderr
    assert decide(kube, APPROVER, ns, "prod", deletion=True, comment="retire it").returncode == 0
    r = kubectl_as(kube, APPROVER, ns, "delete", "deployment.kiln.dev", "prod", "--wait=false")
    assert r.returncode != 0, "the approver deleted on their own approval"
    r = kubectl_as(kube, DEPLOYER, ns, "delete", "deployment.kiln.dev", "prod", "--wait=false")
    assert r.returncode == 0, r.stderr

    # Another one stays until its namespace goes: the namespace's deletion is not refused.
    assert kubectl_as(kube, DEPLOYER, ns, "create", "-f", "-",
                      body=deployment("other", artifact_ref="v1", importance="High")).returncode == 0
    kube.core.delete_namespace(ns)
    kube.wait(lambda: not kube.exists(kube.core.read_namespace, ns), what=f"namespace {ns} deleted", timeout=90)
