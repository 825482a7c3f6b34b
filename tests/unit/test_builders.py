"""Pure builders and status logic."""

from __future__ import annotations

from kiln.api.digest import spec_digest
from kiln.api.models import ArtifactStatus, ConditionType, Container, Lifecycle, ObjectMeta
from kiln.controllers import builders as b
from kiln.controllers import conditions as cond
from kiln.controllers.artifacts import plan_status
from kiln.controllers.cache import artifact_view

# A user-supplied securityContext does not even parse into the model: the hardened one is Kiln's alone.
C = Container.model_validate({"name": "app", "image": "registry.example/app:1",
                              "ports": [{"name": "http", "containerPort": 8080}],
                              "securityContext": {"privileged": True}})
DIGEST = "sha256:" + "ab" * 32


def test_pod_names_are_deterministic_and_keyed_on_spec_and_restart() -> None:
    r1 = b.revision(DIGEST, None)
    assert r1 == b.revision(DIGEST, None)
    assert r1 != b.revision(DIGEST, "2026-11-30T12:00:00Z")
    assert r1 != b.revision("sha256:" + "cd" * 32, None)
    assert b.workload_pod_name("my-app", r1, 0) == f"my-app-{r1}-0"


def test_workload_pod_labels_and_hardening() -> None:
    pod = b.workload_pod("my-app", "art", [C], DIGEST, "rev1", 2)
    labels = pod["metadata"]["labels"]
    assert labels["kiln.dev/workload"] == "my-app"
    assert labels["kiln.dev/artifact"] == "art"
    assert labels["kiln.dev/spec-digest"] == "ab" * 16
    assert labels["app.kubernetes.io/managed-by"] == "kiln"
    assert pod["metadata"]["annotations"]["kiln.dev/spec-digest"] == DIGEST
    c = pod["spec"]["containers"][0]
    # A user-supplied securityContext never reaches the pod: the hardened one replaces it.
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_builder_does_not_share_state_between_pods() -> None:
    p1 = b.workload_pod("a", "art", [C], DIGEST, "r", 0)
    p1["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"].append("X")
    p2 = b.workload_pod("a", "art", [C], DIGEST, "r", 1)
    assert p2["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_service_only_with_ports_and_deduplicated() -> None:
    assert b.service("x", "art", "workload", {"k": "v"}, [Container(name="a", image="i")]) is None
    svc = b.service("x", "art", "workload", {"k": "v"}, [C, C.model_copy(update={"name": "side"})])
    assert svc is not None
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {"k": "v"}


def test_conditions_keep_transition_time_while_status_holds() -> None:
    ready = ConditionType.READY
    first = cond.merge(None, [cond.condition(ready, False, "A", "m", 1)], at="t1")
    same = cond.merge(first, [cond.condition(ready, False, "B", "m2", 2)], at="t2")
    flipped = cond.merge(same, [cond.condition(ready, True, "C", "m3", 3)], at="t3")
    assert [c.last_transition_time for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert flipped[0].to_dict()["status"] == "True" and flipped[0].observed_generation == 3


META = ObjectMeta(name="a", generation=2, annotations={"kiln.dev/registered-by": "alice"})


def _status(lifecycle: Lifecycle, image: str, old: ArtifactStatus | None = None) -> ArtifactStatus:
    view = artifact_view({"spec": {"lifecycle": lifecycle, "containers": [{"name": "app", "image": image}]}})
    return plan_status(META, lifecycle, view, old or ArtifactStatus(), "t")


def test_artifact_status_draft_and_registered() -> None:
    draft = _status(Lifecycle.DRAFT, "i:1")
    assert draft.spec_digest == spec_digest({"containers": [{"name": "app", "image": "i:1"}]})
    assert draft.lifecycle == Lifecycle.DRAFT and draft.observed_generation == 2 and draft.registered_by is None
    assert (ready := cond.get(draft.conditions, ConditionType.READY)) and ready.reason == "Draft"
    # Registration keeps the digest: the pods of running workloads are not restarted.
    reg = _status(Lifecycle.REGISTERED, "i:1", draft)
    assert reg.spec_digest == draft.spec_digest and reg.registered_by == "alice"
    assert (ready := cond.get(reg.conditions, ConditionType.READY)) and ready.reason == "Registered"
    # Once registered the digest is frozen, and who registered it too.
    frozen = plan_status(META.model_copy(update={"annotations": {"kiln.dev/registered-by": "mallory"}}),
                         Lifecycle.REGISTERED, artifact_view({"spec": {"lifecycle": "Registered", "containers": [
                             {"name": "app", "image": "i:2"}]}}), reg, "t2")
    assert frozen.spec_digest == draft.spec_digest and frozen.registered_by == "alice"


def test_an_invalid_artifact_says_which_field() -> None:
    view = artifact_view({"spec": {"containers": [{"name": "App!"}]}})
    st = plan_status(META, Lifecycle.DRAFT, view, ArtifactStatus(), "t")
    ready = cond.get(st.conditions, ConditionType.READY)
    assert ready and ready.reason == "InvalidSpec" and st.spec_digest is None
    assert "spec.containers.0.name" in (ready.message or "") and "spec.containers.0.image" in (ready.message or "")
