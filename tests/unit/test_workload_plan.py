"""The Workload's decision table (kiln.controllers.workloads.plan): every state it can report, and
what it does to its pods, Service and Events in each. The integration tests prove the applying."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.api.models import ConditionType, UpdatePolicy, Workload, WorkloadPhase
from kiln.controllers import builders as b
from kiln.controllers.cache import ArtifactView, PodView, artifact_view
from kiln.controllers.workloads import Hold, Plan, plan

PORTS = [{"name": "http", "containerPort": 80}]
ART = artifact_view({"spec": {"containers": [{"name": "app", "image": "i:1", "ports": PORTS}]}})
ART2 = artifact_view({"spec": {"containers": [{"name": "app", "image": "i:2", "ports": PORTS}]}})
REV = b.revision(ART.digest, None)


def workload(replicas: int = 2, state: str = "Running", status: dict[str, Any] | None = None,
             restarted_at: str | None = None) -> Workload:
    return Workload.model_validate({
        "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "generation": 3,
                     "annotations": {"kiln.dev/restartedAt": restarted_at} if restarted_at else {}},
        "spec": {"artifactRef": {"name": "art"}, "replicas": replicas, "state": state},
        "status": {"observedGeneration": 2, **(status or {})}})


def pod(i: int, rev: str = REV, ready: bool = True, phase: str = "Running", deleting: bool = False,
        broken: str | None = None, digest: ArtifactView = ART, owner: str = "u1") -> PodView:
    return PodView(b.workload_pod_name("w", rev, i), rev, b.digest_label(digest.digest), ready, phase, deleting,
                   broken, owner)


def ready(p: Plan) -> tuple[str, str]:
    c = next(c for c in p.status.conditions or [] if c.type == ConditionType.READY)
    return c.status.value, c.reason or ""


def names(bodies: list[dict[str, Any]]) -> list[str]:
    return [x["metadata"]["name"] for x in bodies]


# (case, workload, artifact, pods) -> (state, Ready, pods created, deleted, deleted at once, events)
CASES = [
    ("artifact missing: nothing runs", workload(), None, [pod(0)],
     (WorkloadPhase.PENDING, ("False", "ArtifactNotFound"), [], [pod(0).name], [], [])),
    ("first visit: creates every pod", workload(status={"observedGeneration": 0}), ART, [],
     (WorkloadPhase.STARTING, ("False", "PodsNotReady"), [pod(0).name, pod(1).name], [], [], ["Created"])),
    ("pods created, none ready", workload(), ART, [pod(0, ready=False), pod(1, ready=False, phase="Pending")],
     (WorkloadPhase.STARTING, ("False", "PodsNotReady"), [], [], [], [])),
    ("all ready: Running", workload(), ART, [pod(0), pod(1)],
     (WorkloadPhase.RUNNING, ("True", "PodsReady"), [], [], [], [])),
    ("a pod that will not start: Failed", workload(), ART,
     [pod(0), pod(1, ready=False, broken="container app: ImagePullBackOff (nope)")],
     (WorkloadPhase.FAILED, ("False", "PodsFailing"), [], [], [], [])),
    ("a failed pod is replaced", workload(), ART, [pod(0), pod(1, ready=False, phase="Failed")],
     (WorkloadPhase.STARTING, ("False", "PodsNotReady"), [pod(1).name], [], [pod(1).name], ["PodReplaced"])),
    ("the draft changed: restart onto it", workload(), ART2, [pod(0), pod(1)],
     (WorkloadPhase.STARTING, ("False", "PodsNotReady"),
      [pod(0, b.revision(ART2.digest, None)).name, pod(1, b.revision(ART2.digest, None)).name],
      [pod(0).name, pod(1).name], [], ["Restarted"])),
    ("a restart asked for: new pods", workload(restarted_at="t9"), ART, [pod(0), pod(1)],
     (WorkloadPhase.STARTING, ("False", "PodsNotReady"),
      [pod(0, b.revision(ART.digest, "t9")).name, pod(1, b.revision(ART.digest, "t9")).name],
      [pod(0).name, pod(1).name], [], ["Restarted"])),
    ("scaled down: the extra pod goes", workload(replicas=1), ART, [pod(0), pod(1)],
     (WorkloadPhase.RUNNING, ("True", "PodsReady"), [], [pod(1).name], [], [])),
    ("stopping: pods go", workload(state="Stopped", status={"state": "Running"}), ART, [pod(0), pod(1)],
     (WorkloadPhase.STOPPED, ("False", "Stopping"), [], [pod(0).name, pod(1).name], [], ["Stopped"])),
    ("stopping: the last pods leaving", workload(state="Stopped", status={"state": "Stopped"}), ART,
     [pod(0, deleting=True)], (WorkloadPhase.STOPPED, ("False", "Stopping"), [], [], [], [])),
    ("stopped", workload(state="Stopped", status={"state": "Stopped"}), ART, [],
     (WorkloadPhase.STOPPED, ("True", "Stopped"), [], [], [], [])),
    ("started again", workload(status={"state": "Stopped"}), ART, [],
     (WorkloadPhase.STARTING, ("False", "PodsNotReady"), [pod(0).name, pod(1).name], [], [], ["Started"])),
    ("zero replicas", workload(replicas=0), ART, [],
     (WorkloadPhase.RUNNING, ("True", "PodsReady"), [], [], [], [])),
]


@pytest.mark.parametrize(("workload_", "artifact", "pods", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_decision_table(workload_: Workload, artifact: ArtifactView | None, pods: list[PodView],
                        expected: tuple[Any, ...]) -> None:
    state, ready_, created, deleted, deleted_now, events = expected
    p = plan(workload_, artifact, pods, at="t")
    assert (p.status.state, ready(p)) == (state, ready_)
    assert (names(p.create), p.delete, p.delete_now) == (created, deleted, deleted_now)
    assert [e.reason for e in p.events] == events
    assert p.status.observed_generation == 3


def test_status_reports_the_artifact_and_counts() -> None:
    p = plan(workload(), ART, [pod(0), pod(1, ready=False)], at="t")
    st = p.status
    assert (st.replicas, st.ready_replicas) == (2, 1)
    assert st.artifact is not None and (st.artifact.name, st.artifact.spec_digest) == ("art", ART.digest)
    conditions = {c.type: (c.status.value, c.reason) for c in st.conditions or []}
    assert conditions[ConditionType.AVAILABLE] == ("False", "MinimumReplicasAvailable")
    assert conditions[ConditionType.PROGRESSING] == ("True", "Converging")


def test_pods_are_owned_and_the_service_follows_the_ports() -> None:
    p = plan(workload(status={"observedGeneration": 0}), ART, [], at="t")
    assert all(x["metadata"]["ownerReferences"][0]["uid"] == "u1" for x in p.create)
    assert p.converge_service and p.service is not None and p.service["metadata"]["name"] == "w-dev"
    assert p.service["spec"]["ports"][0]["port"] == 80
    stopped = plan(workload(state="Stopped"), ART, [], at="t")
    assert stopped.converge_service and stopped.service is None, "a stopped Workload has no Service"


def test_an_invalid_artifact_keeps_what_runs() -> None:
    bad = artifact_view({"spec": {"containers": [{"name": "Bad!", "image": "i"}]}})
    p = plan(workload(status={"state": "Running", "replicas": 2}), bad, [pod(0), pod(1)], at="t")
    assert (p.create, p.delete, p.converge_service) == ([], [], False)
    assert ready(p) == ("False", "InvalidArtifact") and p.status.state == WorkloadPhase.RUNNING


def test_a_child_that_could_not_be_converged_is_the_status() -> None:
    p = plan(workload(), ART, [pod(0), pod(1)], at="t", problem=("NameConflict", "Service w-dev is not ours"))
    assert ready(p) == ("False", "NameConflict")


def test_pods_it_does_not_own_are_neither_counted_nor_deleted() -> None:
    """A pod that carries the Workload's label without being its child (relabelled, made in advance
    under the name it needs) is left alone; the name taken is reported."""
    stranger = pod(5, owner="someone-else")
    squatter = pod(1, owner="someone-else")
    p = plan(workload(), ART, [pod(0), stranger, squatter], at="t")
    assert stranger.name not in p.delete and squatter.name not in p.delete + p.delete_now
    assert names(p.create) == [], "the squatted name is not created again"
    assert ready(p) == ("False", "NameConflict") and squatter.name in (p.status.conditions or [])[0].message
    assert p.status.ready_replicas == 1


def test_a_manual_workload_keeps_its_pods_until_a_restart() -> None:
    """updatePolicy Manual: a changed Draft is announced (UpdateAvailable), the pods stay; a pod needed
    again is made like a live one."""
    manual = workload(status={"artifact": {"name": "art", "specDigest": ART.digest}}).model_copy()
    manual.spec.update_policy = UpdatePolicy.MANUAL
    template = b.workload_pod("w", "art", ART.spec.containers if ART.spec else [], ART.digest, REV, 0)
    template["spec"]["nodeName"] = "kiln-real"
    p = plan(manual, ART2, [pod(0)], at="t", hold=Hold(ART.digest, template))
    assert p.delete == [] and names(p.create) == [pod(1).name], "the old pods stay, the missing one like them"
    assert p.create[0]["spec"]["containers"][0]["image"] == "i:1" and "nodeName" not in p.create[0]["spec"]
    assert p.create[0]["metadata"]["labels"]["kiln.dev/index"] == "1"
    assert p.status.artifact is not None and p.status.artifact.spec_digest == ART.digest
    update = next(c for c in p.status.conditions or [] if c.type == ConditionType.UPDATE_AVAILABLE)
    assert update.status.value == "True" and ART2.digest[:19] in (update.message or "")
    up_to_date = plan(manual, ART, [pod(0), pod(1)], at="t")
    assert next(c for c in up_to_date.status.conditions or [] if c.type == ConditionType.UPDATE_AVAILABLE
                ).status.value == "False"


def test_only_a_first_visit_with_pods_waiting_to_start_may_hold_its_status() -> None:
    """A new Workload's "Starting" can wait for its pods' readiness (one status write, not two); once a
    status was written, or a pod runs, fails or is missing, the status is written at once."""
    first = workload(status={"observedGeneration": 0})
    assert plan(first, ART, [], at="t").status_can_wait, "pods just created"
    assert plan(first, ART, [pod(0, ready=False, phase="Pending")], at="t").status_can_wait
    assert not plan(first, ART, [pod(0, ready=False), pod(1, ready=False)], at="t").status_can_wait, "running"
    assert not plan(first, ART, [pod(0, ready=False, phase="Pending", broken="container app: ErrImagePull")],
                    at="t").status_can_wait
    assert not plan(first, ART, [pod(0), pod(1)], at="t").status_can_wait, "Running: written"
    assert not plan(first, None, [], at="t").status_can_wait, "Pending, artifact missing: written"
    assert not plan(workload(), ART, [], at="t").status_can_wait, "not a first visit"
    taken = plan(first, ART, [], at="t", problem=("NameConflict", "x"))
    assert not taken.status_can_wait
