"""The user's tutorial (examples/README.md, steps 1 to 6) driven with kubectl alone. On the real node it
also calls the model over HTTP, from this host through kube-proxy, as the seed's "test" step does."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import EXAMPLES, answer, service_url
from tests.kube import Kube

FEATURES = {"features": [1, 2, 3]}  # v1 scores 0.5 * 6, v2 2.0 * 6, v3 3.0 * 6
SCORES = {"v1": 3.0, "v2": 12.0, "v3": 18.0}


def run_tutorial(kube: Kube, namespace: str, *, real: bool, actor: str = "kiln-admin",
                 approver_role: str = "kiln-approver") -> None:
    def k(*args: str, check: bool = True) -> str:
        r = kube.kubectl("-n", namespace, *args, check=check)
        return r.stdout if check else r.stderr

    def jp(resource: str, path: str) -> str:
        return k("get", resource, "-o", f"jsonpath={path}")

    def wait(resource: str, path: str, value: str, timeout: int = 90) -> None:
        k("wait", f"--for=jsonpath={path}={value}", resource, f"--timeout={timeout}s")

    def pods() -> set[str]:
        return set(k("get", "pods", "-l", "kiln.dev/workload=my-app", "-o", "name").split())

    def replica_set() -> str:
        return _replica_set(kube, namespace)

    def model(service: str, version: str) -> None:
        """The model behind the Service answers, with this version (old pods may still be leaving)."""
        if real:
            url = service_url(kube, namespace, service, "/predict")
            expected = {"model": "scorer", "version": version, "score": SCORES[version]}
            kube.wait(lambda: answer(url, FEATURES) == expected, what=f"{url} to answer {expected}", timeout=60)

    # Step 1: a workload with an inline artifact creates a Draft artifact and runs.
    k("apply", "-f", str(EXAMPLES / "01-workload-with-inline-artifact.yaml"))
    wait("workload.kiln.dev/my-app", "{.status.state}", "Running")
    assert jp("artifact.kiln.dev/my-app", "{.spec.lifecycle}") == "Draft"
    step1 = pods()
    assert len(step1) == 1
    model("my-app-dev", "v1")

    # 2a: a metadata patch restarts nothing.
    k("patch", "artifact.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"description":"v2"}}')
    wait("artifact.kiln.dev/my-app", "{.status.observedGeneration}", "2")
    assert pods() == step1

    # 2b: replacing the whole draft restarts the workload onto the new spec: the model answers v2.
    k("replace", "-f", str(EXAMPLES / "02b-artifact-my-app.yaml"))
    wait("artifact.kiln.dev/my-app", "{.status.observedGeneration}", "3")
    digest = jp("artifact.kiln.dev/my-app", "{.status.specDigest}")
    wait("workload.kiln.dev/my-app", "{.status.artifact.specDigest}", digest)
    wait("workload.kiln.dev/my-app", "{.status.state}", "Running")
    # Real pods take a moment to leave (graceful termination); simulated ones are gone at once.
    step2 = kube.wait(lambda: (p := pods()) and p.isdisjoint(step1) and p, what="only the new pod", timeout=60)
    assert len(step2) == 1
    assert jp("pods", "{.items[0].spec.containers[0].image}") == "127.0.0.1:5001/kiln/scorer:v2"
    model("my-app-dev", "v2")

    # 2c: stop (nothing answers any more), then start.
    k("patch", "workload.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"state":"Stopped"}}')
    wait("workload.kiln.dev/my-app", '{.status.conditions[?(@.type=="Ready")].reason}', "Stopped")
    assert pods() == set()
    if real:
        ip = {p.status.pod_ip for p in kube.core.list_namespaced_pod(namespace).items} - {None}
        assert not ip, ip
        assert not kube.exists(kube.core.read_namespaced_service, "my-app-dev", namespace)
    k("patch", "workload.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"state":"Running"}}')
    wait("workload.kiln.dev/my-app", "{.status.state}", "Running")
    running = pods()
    assert len(running) == 1
    model("my-app-dev", "v2")

    # Step 3: register; the spec is locked, nothing restarts.
    k("patch", "artifact.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"lifecycle":"Registered"}}')
    wait("artifact.kiln.dev/my-app", "{.status.lifecycle}", "Registered")
    registered: dict[str, Any] = json.loads(k("get", "artifact.kiln.dev/my-app", "-o", "json"))
    assert registered["status"]["registeredBy"] == actor
    # Version 1 of the collection my-app; its image resolved in the local registry, and the spec digest
    # now covers the image's digest.
    assert (registered["status"]["collection"], registered["status"]["version"]) == ("my-app", 1)
    [image] = registered["status"]["images"]
    assert image["image"] == "127.0.0.1:5001/kiln/scorer:v2" and image["digest"].startswith("sha256:"), image
    pinned = registered["status"]["specDigest"]
    assert pinned != digest
    err = k("replace", "-f", str(EXAMPLES / "03-artifact-my-app-v3.yaml"), check=False)
    assert "Registered" in err and "my-app" in err, err
    assert pods() == running

    # Step 4: promote the workload to a governed Deployment. High importance: it waits for an approval
    # by an approver (not the requester), then rolls out; its Service answers with the pinned version.
    k("apply", "-f", str(EXAMPLES / "04-deployment.yaml"))
    wait("deployment.kiln.dev/my-app", '{.status.conditions[?(@.type=="Approved")].reason}', "AwaitingApproval")
    assert not kube.exists(kube.apps.read_namespaced_deployment, "my-app", namespace), "rolled out unapproved"
    k("create", "rolebinding", "alice-approver", f"--clusterrole={approver_role}", "--user=alice")
    k("create", "-f", str(EXAMPLES / "04-approval.yaml"), "--as", "alice")
    k("wait", "--for=condition=Approved", "deployment.kiln.dev/my-app", "--timeout=60s")
    wait("deployment.kiln.dev/my-app", '{.status.conditions[?(@.type=="Ready")].status}', "True", timeout=120)
    dep: dict[str, Any] = json.loads(k("get", "deployment.kiln.dev/my-app", "-o", "json"))
    assert dep["spec"]["artifactRef"] == {"name": "my-app"}
    assert dep["status"]["artifact"]["specDigest"] == pinned
    assert dep["status"]["readyReplicas"] == 2
    requested, approved, created = dep["status"]["history"]
    assert (requested["action"], requested["actor"]) == ("ApprovalRequested", actor)
    assert (approved["action"], approved["actor"]) == ("Approved", "alice")
    assert (created["action"], created["actor"], created["artifact"]) == ("Created", actor, "my-app")
    table = k("get", "deployments.kiln.dev")
    assert "High" in table and "True" in table, table
    assert jp("deployment.apps/my-app", "{.status.readyReplicas}") == "2"
    model("my-app", "v2")
    # Production runs the image by the digest registration resolved, not by its tag.
    assert set(k("get", "pods", "-l", "kiln.dev/deployment=my-app", "-o",
                 "jsonpath={.items[*].spec.containers[0].image}").split()) == {
        f"127.0.0.1:5001/kiln/scorer@{image['digest']}"}
    first = replica_set()

    def approve(generation: int, comment: str) -> None:
        body = {"apiVersion": "kiln.dev/v1alpha1", "kind": "Approval",
                "metadata": {"name": f"my-app-{generation}"},
                "spec": {"deploymentRef": {"name": "my-app"}, "generation": generation, "decision": "Approve",
                         "comment": comment}}
        kube.kubectl("-n", namespace, "create", "-f", "-", "--as", "alice", input=json.dumps(body))

    def runs_version(version: int) -> dict[str, Any]:
        wait("deployment.kiln.dev/my-app", "{.status.artifact.version}", str(version))
        wait("deployment.kiln.dev/my-app", '{.status.conditions[?(@.type=="Ready")].status}', "True", timeout=120)
        return dict(json.loads(k("get", "deployment.kiln.dev/my-app", "-o", "json")))

    # Step 5: the next version, registered as it is created (version 2 of my-app); production switches to it
    # by collection and version, once approved.
    k("apply", "-f", str(EXAMPLES / "05-artifact-my-app-2.yaml"))
    wait("artifact.kiln.dev/my-app-2", "{.status.version}", "2")
    k("patch", "deployment.kiln.dev", "my-app", "--type", "merge", "-p",
      '{"spec":{"artifactRef":{"name":null,"collection":"my-app","version":2}}}')
    wait("deployment.kiln.dev/my-app", '{.status.conditions[?(@.type=="Approved")].reason}', "AwaitingApproval")
    approve(2, "v3 beats v2 offline")
    dep = runs_version(2)
    assert dep["status"]["artifact"]["name"] == "my-app-2"
    assert dep["status"]["history"][-1]["action"] == "ArtifactSwitched"
    model("my-app", "v3")

    # Step 6: roll back to version 1: recorded as such, approved like any switch; the ReplicaSet of step 4,
    # kept, runs again.
    k("patch", "deployment.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"artifactRef":{"version":1}}}')
    wait("deployment.kiln.dev/my-app", '{.status.conditions[?(@.type=="Approved")].reason}', "AwaitingApproval")
    approve(3, "v3 misbehaves online: back to v2")
    dep = runs_version(1)
    back = dep["status"]["history"][-1]
    assert (back["action"], back["fromVersion"], back["version"], back["actor"]) == ("RolledBack", 2, 1, actor)
    assert dep["status"]["artifact"]["specDigest"] == pinned
    model("my-app", "v2")
    assert replica_set() == first


def _replica_set(kube: Kube, namespace: str) -> str:
    """The one ReplicaSet of the governed Deployment my-app that has pods, once its rollout is done."""
    def check() -> str | None:
        d = kube.apps.read_namespaced_deployment("my-app", namespace)
        sets = [rs for rs in kube.apps.list_namespaced_replica_set(
            namespace, label_selector="kiln.dev/deployment=my-app").items if rs.spec.replicas]
        done = d.status.observed_generation == d.metadata.generation and d.status.updated_replicas == d.spec.replicas
        return sets[0].metadata.name if done and len(sets) == 1 else None
    return kube.wait(check, what="one ReplicaSet of my-app running", timeout=120)
