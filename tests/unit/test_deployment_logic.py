"""Pure parts of the governed Deployment: its apps/v1 child, drift, audit trail, rollout conditions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kiln.api.digest import spec_digest
from kiln.api.models import (
    Approval,
    ApprovalPolicySpec,
    Artifact,
    Condition,
    ConditionType,
    Container,
    Deployment,
    DeploymentStatus,
    HistoryEntry,
    Trigger,
)
from kiln.controllers import builders as b
from kiln.controllers.deployments import blocked_status, history_entries, plan, rollout_conditions, rollout_status
from kiln.controllers.governance import deletion_verdict, gate
from kiln.tree import drift

C = [Container.model_validate({"name": "app", "image": "registry.example/app:1",
                               "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                               "resources": {"requests": {"cpu": "0.1", "memory": "128Mi"}}})]
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def dep(history: list[HistoryEntry] | None = None, actor: str | None = "alice") -> Deployment:
    return Deployment.model_validate({
        "metadata": {"name": "prod", "annotations": {"kiln.dev/changed-by": actor} if actor else {}},
        "spec": {"artifactRef": {"name": "app"}},
        "status": {"history": [h.to_dict() for h in history or []]}})


def test_apps_deployment_is_hardened_and_pinned() -> None:
    d = b.apps_deployment("prod", "uid-1", "app", C, D1, 3, "High")
    spec = d["spec"]
    assert spec["replicas"] == 3 and spec["selector"] == {"matchLabels": {"kiln.dev/deployment": "prod"}}
    assert spec["strategy"]["type"] == "RollingUpdate"
    tpl = spec["template"]
    assert tpl["metadata"]["annotations"]["kiln.dev/spec-digest"] == D1
    assert tpl["metadata"]["labels"]["kiln.dev/importance"] == "High"
    c = tpl["spec"]["containers"][0]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert tpl["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_a_container_without_resources_is_not_drift() -> None:
    """The API server returns every container with resources: {}: not a hand edit (it was reverted in
    a loop, a replace per watch event)."""
    bare = [Container(name="app", image="registry.example/app:1")]
    desired = b.apps_deployment("prod", "uid-1", "app", bare, D1, 1, "Moderate")["spec"]
    live = copy.deepcopy(desired)
    live["template"]["spec"]["containers"][0]["resources"] = {}
    assert drift(desired, live) == []


def test_drift_ignores_server_defaults_but_sees_edits_and_additions() -> None:
    desired = b.apps_deployment("prod", "uid-1", "app", C, D1, 1, "Moderate")["spec"]
    live = copy.deepcopy(desired)
    # What the API server adds or normalises is not drift.
    live["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "100m"
    live["progressDeadlineSeconds"] = 600
    assert drift(desired, live) == []
    edited = copy.deepcopy(live)
    edited["replicas"] = 4
    edited["template"]["spec"]["containers"][0]["image"] = "registry.example/evil:1"
    edited["template"]["spec"]["hostNetwork"] = True
    edited["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    found = drift(desired, edited)
    assert "spec.replicas" in found
    assert "spec.template.spec.containers[0].image" in found
    assert "spec.template.spec.hostNetwork (added)" in found
    assert "spec.template.spec.containers[0].securityContext.privileged" in found


def test_history_records_creation_switch_and_scale_with_the_actor() -> None:
    [created] = history_entries(dep(), "app", "a1", D1, 1, "t1")
    assert (created.action, created.actor, created.artifact, created.digest, created.replicas) == (
        "Created", "alice", "app", D1, 1)
    assert history_entries(dep([created]), "app", "a1", D1, 1, "t2") == []  # nothing changed: nothing recorded
    switched, scaled = history_entries(dep([created], actor="bob"), "app2", "a2", D2, 3, "t3")
    assert (switched.action, switched.actor, switched.artifact) == ("ArtifactSwitched", "bob", "app2")
    assert (scaled.action, scaled.replicas, scaled.message) == ("Scaled", 3, "replicas 1 -> 3")
    assert history_entries(dep(actor=None), "app", "a1", D1, 1, "t")[0].actor == "unknown"


def _apps(gen: int, observed: int, replicas: int, ready: int, updated: int, available: int,
          progressing: str = "NewReplicaSetAvailable") -> dict[str, Any]:
    return {"metadata": {"generation": gen}, "status": {
        "observedGeneration": observed, "replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
        "availableReplicas": available, "conditions": [
            {"type": "Available", "status": "True" if available else "False", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": progressing}]}}


def test_rollout_conditions_follow_kstatus() -> None:
    def by_type(conds: list[Condition]) -> dict[str, tuple[str, str]]:
        return {c.type: (c.status.value, c.reason or "") for c in conds}

    conds, ready = rollout_conditions(None, 2, 1)
    assert by_type(conds)["Ready"] == ("False", "Creating") and ready == 0
    conds, _ = rollout_conditions(_apps(2, 1, 2, 2, 2, 2), 2, 1)  # the controller has not seen the change
    assert by_type(conds)["Ready"][0] == "False" and by_type(conds)["Progressing"][0] == "True"
    conds, _ = rollout_conditions(_apps(2, 2, 3, 2, 1, 2), 2, 1)  # old and new pods
    assert by_type(conds)["Ready"] == ("False", "RollingOut")
    conds, ready = rollout_conditions(_apps(2, 2, 2, 2, 2, 2), 2, 1)
    assert by_type(conds)["Ready"] == ("True", "RolloutComplete") and ready == 2
    assert by_type(conds)["Progressing"][0] == "False" and by_type(conds)["Available"][0] == "True"
    conds, _ = rollout_conditions(_apps(2, 2, 2, 0, 2, 0, "ProgressDeadlineExceeded"), 2, 1)
    assert by_type(conds)["Ready"] == ("False", "ProgressDeadlineExceeded")
    assert by_type(conds)["Progressing"][0] == "False"


# --- the decision table of a governed Deployment (kiln.controllers.deployments.plan) ----------------

def artifact(lifecycle: str = "Registered", image: str = "registry.example/app:1") -> Artifact:
    return Artifact.model_validate({"metadata": {"name": "app", "namespace": "ns"},
                                    "spec": {"lifecycle": lifecycle, "containers": [{"name": "app", "image": image}]}})


def governed(pinned: dict[str, Any] | None = None, pdb: bool = False) -> Deployment:
    return Deployment.model_validate({
        "metadata": {"name": "prod", "namespace": "ns", "uid": "u", "generation": 4,
                     "annotations": {"kiln.dev/changed-by": "alice"}},
        "spec": {"artifactRef": {"name": "app"}, "replicas": 2, "importance": "High",
                 **({"podDisruptionBudget": {"minAvailable": 1}} if pdb else {})},
        "status": {"artifact": pinned} if pinned else {}})


BLOCKED = [
    ("the Workload named is missing", governed(), None, None, "WorkloadNotFound"),
    ("the Artifact is missing", governed(), "app", None, "ArtifactNotFound"),
    ("the Artifact is a Draft", governed(), "app", artifact("Draft"), "ArtifactNotRegistered"),
    ("the pinned digest no longer matches", governed({"name": "app", "specDigest": D1}), "app", artifact(),
     "DigestMismatch"),
]


@pytest.mark.parametrize(("dep_", "art_name", "art", "reason"), [c[1:] for c in BLOCKED], ids=[c[0] for c in BLOCKED])
def test_a_change_that_may_not_roll_out_touches_nothing(dep_: Deployment, art_name: str | None,
                                                        art: Artifact | None, reason: str) -> None:
    p = plan(dep_, art_name, art, "t")
    assert p.blocked is not None and p.blocked[0] == reason
    assert (p.apps, p.service, p.pdb, p.new_entries) == ({}, None, None, [])
    st = blocked_status(dep_.model_copy(update={"status": DeploymentStatus.model_validate(
        {"artifact": {"name": "app", "specDigest": D1}, "replicas": 2, "readyReplicas": 2})}), *p.blocked, "t")
    assert (st.replicas, st.ready_replicas, st.artifact and st.artifact.spec_digest) == (2, 2, D1), "kept"
    assert {c.type: c.reason for c in st.conditions or []}[ConditionType.READY] == reason


def test_a_rollout_pins_the_digest_and_records_who() -> None:
    p = plan(governed(pdb=True), "app", artifact(), "t")
    digest = spec_digest(artifact().spec)
    assert p.blocked is None and (p.artifact, p.digest, p.replicas) == ("app", digest, 2)
    assert [(e.action, e.actor) for e in p.new_entries] == [("Created", "alice")] and p.history == p.new_entries
    assert p.apps["spec"]["template"]["metadata"]["annotations"]["kiln.dev/spec-digest"] == digest
    assert p.apps["metadata"]["labels"]["kiln.dev/importance"] == "High"
    assert p.service is None, "no ports, no Service"
    assert p.pdb is not None and p.pdb["spec"]["minAvailable"] == 1
    again = plan(governed({"name": "app", "specDigest": digest}).model_copy(update={
        "status": DeploymentStatus(artifact=None, history=p.history)}), "app", artifact(), "t2")
    assert again.new_entries == [] and again.history == p.history, "nothing new: nothing recorded"


def _with_uid(art: Artifact, uid: str) -> Artifact:
    return art.model_copy(update={"metadata": art.metadata.model_copy(update={"uid": uid})})


def test_a_reused_name_is_another_artifact_and_needs_its_own_promotion() -> None:
    """The pin holds for an object, not a name: an Artifact deleted and recreated under the same name
    (other content, or even the same) runs only once its uid is named in spec.artifactRef.uid."""
    first = plan(governed(), "app", _with_uid(artifact(), "a1"), "t1")
    ran = governed().model_copy(update={"status": DeploymentStatus(
        artifact={"name": "app", "uid": "a1", "specDigest": first.digest}, history=first.history)})
    replaced = _with_uid(artifact(image="registry.example/evil:1"), "a2")
    p = plan(ran, "app", replaced, "t2")
    assert p.blocked is not None and p.blocked[0] == "ArtifactReplaced" and "spec.artifactRef.uid to a2" in p.blocked[1]
    # Switched away and back (the pin names another artifact now): the trail still knows the old object.
    away = ran.model_copy(update={"status": DeploymentStatus(
        artifact={"name": "other", "uid": "o1", "specDigest": D2}, history=first.history)})
    p = plan(away, "app", replaced, "t3")
    assert p.blocked is not None and p.blocked[0] == "ArtifactReplaced"
    # Promoted explicitly: rolls out, recorded as a switch to a new object.
    body = ran.to_dict()
    body["spec"]["artifactRef"]["uid"] = "a2"
    promoted = Deployment.model_validate(body)
    p = plan(promoted, "app", replaced, "t4")
    assert p.blocked is None and [e.action for e in p.new_entries] == ["ArtifactSwitched"]
    assert "a new object under the name of an earlier one (uid a1 -> a2)" in (p.new_entries[0].message or "")
    assert p.new_entries[0].artifact_uid == "a2"
    # spec.artifactRef.uid names an object that is not the one there.
    p = plan(promoted, "app", _with_uid(artifact(), "a3"), "t5")
    assert p.blocked is not None and p.blocked[0] == "ArtifactUidMismatch"


def test_governed_pods_are_selected_by_the_deployments_uid() -> None:
    p = plan(governed(pdb=True), "app", artifact().model_copy(update={"spec": artifact().spec.model_copy(
        update={"containers": C})}), "t")
    assert p.service is not None and p.service["spec"]["selector"] == {"kiln.dev/deployment": "prod",
                                                                       "kiln.dev/owner-uid": "u"}
    assert p.pdb is not None and p.pdb["spec"]["selector"]["matchLabels"]["kiln.dev/owner-uid"] == "u"
    assert p.apps["spec"]["template"]["metadata"]["labels"]["kiln.dev/owner-uid"] == "u"
    assert p.apps["spec"]["selector"] == {"matchLabels": {"kiln.dev/deployment": "prod"}}, "immutable: unchanged"
    st = rollout_status(governed(), p, None, "t")
    assert [(e.name, e.url) for e in st.endpoints or []] == [("tcp-8080", "http://prod.ns.svc:8080")]


# --- governance: the approval gate (kiln.controllers.deployments.gate) -------------------------------

def _approval(approver: str, decision: str = "Approve", generation: int = 4, comment: str = "") -> Approval:
    return Approval.model_validate({"metadata": {"name": f"{approver}-{generation}"}, "spec": {
        "deploymentRef": {"name": "prod"}, "generation": generation, "decision": decision, "approver": approver,
        "comment": comment or None}})


def test_the_gate_counts_distinct_approvers_other_than_the_requester() -> None:
    d = governed()  # High, requested by alice, generation 4
    changes = plan(d, "app", artifact(), "2026-01-01T00:00:00Z").new_entries
    wait = gate(d, changes, ApprovalPolicySpec(), lambda: [_approval("alice")], "2026-01-01T00:00:00Z")
    assert not wait.may_roll_out and wait.approved.reason == "AwaitingApproval"
    assert "needs 1 more approval(s)" in (wait.approved.message or "") and "other than alice" in (
        wait.approved.message or "")
    assert [(e.action, e.actor) for e in wait.entries] == [("ApprovalRequested", "alice")]
    stale = gate(d, changes, ApprovalPolicySpec(), lambda: [_approval("bob", generation=3)], "2026-01-01T00:00:00Z")
    assert not stale.may_roll_out, "an approval of another change does not count"
    go = gate(d, changes, ApprovalPolicySpec(), lambda: [_approval("bob", comment="ok")], "2026-01-01T00:00:00Z")
    assert go.may_roll_out and go.approved.reason == "Approved"
    assert [(e.action, e.actor, e.message) for e in go.entries] == [
        ("ApprovalRequested", "alice", "Create (generation 4) needs 1 approval(s) for importance High"),
        ("Approved", "bob", "ok")]


def test_the_gate_rejects_expires_and_skips_what_the_policy_does_not_ask() -> None:
    d = governed()
    changes = plan(d, "app", artifact(), "2026-01-01T00:00:00Z").new_entries
    no = gate(d, changes, ApprovalPolicySpec(), lambda: [_approval("bob"), _approval("carol", "Reject", comment="no")],
              "2026-01-01T00:00:00Z")
    assert not no.may_roll_out and no.approved.reason == "Rejected" and "carol: no" in (no.approved.message or "")
    asked = d.model_copy(update={"status": DeploymentStatus(history=gate(
        d, changes, ApprovalPolicySpec(), list, "2026-01-01T00:00:00Z").entries)})
    late = gate(asked, changes, ApprovalPolicySpec(expire_after_seconds=60), list, "2026-01-01T00:01:00Z")
    assert not late.may_roll_out and late.approved.reason == "Expired"
    assert [(e.action, e.actor) for e in late.entries] == [("Expired", "kiln")]
    free = gate(d, changes, ApprovalPolicySpec(rules=[]), lambda: [], "2026-01-01T00:00:00Z")
    assert free.may_roll_out and free.approved.reason == "NotRequired" and free.entries == []
    only_zero = ApprovalPolicySpec(triggers=[Trigger.SCALE_TO_ZERO])
    assert gate(d, changes, only_zero, lambda: [], "2026-01-01T00:00:00Z").may_roll_out, "Create not a trigger"


def test_a_deletion_needs_approvals_by_others_than_who_deletes() -> None:
    d = governed()  # High: one approval
    policy = ApprovalPolicySpec()
    change_ok = _approval("bob")  # approves a change, not the deletion
    assert "needs 1 approval(s) of its deletion (0 so far)" in (deletion_verdict(d, policy, [change_ok], "alice") or "")
    gone = Approval.model_validate({**_approval("bob").to_dict(), "spec": {**_approval("bob").spec.to_dict(),
                                                                            "deletion": True}})
    assert deletion_verdict(d, policy, [gone], "alice") is None
    assert deletion_verdict(d, policy, [gone], "bob") is not None, "not on one's own approval"
    assert deletion_verdict(d, ApprovalPolicySpec(triggers=[Trigger.CREATE]), [], "alice") is None
