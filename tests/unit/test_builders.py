"""Pure builders and status logic."""

from __future__ import annotations

from kiln import builders as b
from kiln import conditions as cond
from kiln.artifacts import desired_status
from kiln.digest import spec_digest

C = {"name": "app", "image": "registry.example/app:1", "ports": [{"name": "http", "containerPort": 8080}],
     "securityContext": {"privileged": True}}
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
    assert b.service("x", "art", "workload", {"k": "v"}, [{"name": "a", "image": "i"}]) is None
    svc = b.service("x", "art", "workload", {"k": "v"}, [C, {**C, "name": "side"}])
    assert svc is not None
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {"k": "v"}


def test_conditions_keep_transition_time_while_status_holds() -> None:
    first = cond.merge(None, [cond.condition("Ready", False, "A", "m", 1)], at="t1")
    same = cond.merge(first, [cond.condition("Ready", False, "B", "m2", 2)], at="t2")
    flipped = cond.merge(same, [cond.condition("Ready", True, "C", "m3", 3)], at="t3")
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert flipped[0]["status"] == "True" and flipped[0]["observedGeneration"] == 3


def _artifact(lifecycle: str, image: str, status: dict | None = None) -> dict:
    return {"metadata": {"generation": 2}, "spec": {"lifecycle": lifecycle, "containers": [
        {"name": "app", "image": image}]}, "status": status or {}}


def test_artifact_status_draft_and_registered() -> None:
    draft = desired_status(_artifact("Draft", "i:1"))
    assert draft["specDigest"] == spec_digest({"containers": [{"name": "app", "image": "i:1"}]})
    assert draft["lifecycle"] == "Draft" and draft["observedGeneration"] == 2
    assert cond.get(draft["conditions"], "Ready")["reason"] == "Draft"
    # Registration keeps the digest: the pods of running workloads are not restarted.
    reg = desired_status(_artifact("Registered", "i:1", draft))
    assert reg["specDigest"] == draft["specDigest"]
    assert cond.get(reg["conditions"], "Ready")["reason"] == "Registered"
    # Once registered the digest is frozen.
    frozen = desired_status(_artifact("Registered", "i:2", reg))
    assert frozen["specDigest"] == draft["specDigest"]
