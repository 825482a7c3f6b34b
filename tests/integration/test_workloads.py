"""Workloads and Draft Artifacts against the real API server with the real operator running."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
G, V = "kiln.dev", "v1alpha1"


def container(image: str = "registry.example/app:1", port: int | None = 8080, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "app", "image": image, **extra}
    if port:
        c["ports"] = [{"name": "http", "containerPort": port}]
    return c


def workload(name: str, *, inline: list[dict[str, Any]] | None = None, ref: str | None = None,
             **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = dict(spec)
    if inline is not None:
        s["artifact"] = {"displayName": name, "containers": inline}
    if ref is not None:
        s["artifactRef"] = {"name": ref}
    return {"apiVersion": f"{G}/{V}", "kind": "Workload", "metadata": {"name": name}, "spec": s}


def artifact(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{V}", "kind": "Artifact", "metadata": {"name": name},
            "spec": {"containers": containers, **spec}}


def create(kube: Kube, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    plural = body["kind"].lower() + "s"
    return dict(kube.custom.create_namespaced_custom_object(G, V, ns, plural, body))


def get(kube: Kube, ns: str, plural: str, name: str) -> dict[str, Any]:
    return dict(kube.custom.get_namespaced_custom_object(G, V, ns, plural, name))


def patch(kube: Kube, ns: str, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return dict(kube.custom.patch_namespaced_custom_object(G, V, ns, plural, name, body))


def pods(kube: Kube, ns: str, wl: str) -> list[Any]:
    items = kube.core.list_namespaced_pod(ns, label_selector=f"kiln.dev/workload={wl}").items
    return [p for p in items if not p.metadata.deletion_timestamp]


def ready_pods(kube: Kube, ns: str, wl: str) -> list[Any]:
    return [p for p in pods(kube, ns, wl)
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def wait_running(kube: Kube, ns: str, wl: str, replicas: int = 1, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kube, ns, "workloads", wl)
        st = obj.get("status") or {}
        ok = (st.get("state") == "Running" and st.get("readyReplicas") == replicas
              and st.get("observedGeneration") == obj["metadata"]["generation"]
              and len(pods(kube, ns, wl)) == replicas)
        return obj if ok else None

    return kube.wait(check, what=f"workload {ns}/{wl} Running with {replicas} ready", timeout=timeout)


def events(kube: Kube, ns: str, name: str) -> list[str]:
    return [e.reason for e in kube.core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},involvedObject.kind=Workload").items]


def pod_names(kube: Kube, ns: str, wl: str) -> set[str]:
    return {p.metadata.name for p in pods(kube, ns, wl)}


# --- creation ---------------------------------------------------------------------------------


def test_inline_artifact_creates_draft_and_runs_pods(kube: Kube, operator: Operator, namespace: str) -> None:
    wl = create(kube, namespace, workload("my-app", inline=[container()], replicas=2))
    obj = wait_running(kube, namespace, "my-app", replicas=2)

    art = get(kube, namespace, "artifacts", "my-app")
    assert art["spec"]["lifecycle"] == "Draft"
    assert not art["metadata"].get("ownerReferences"), "artifacts outlive development workloads"
    digest = kube.wait(lambda: get(kube, namespace, "artifacts", "my-app").get("status", {}).get("specDigest"),
                       what="artifact digest")
    assert digest.startswith("sha256:")

    st = obj["status"]
    assert st["artifact"] == {"name": "my-app", "uid": art["metadata"]["uid"], "lifecycle": "Draft",
                              "specDigest": digest}
    assert st["replicas"] == 2
    ready = Kube.condition(obj, "Ready")
    assert ready and ready["status"] == "True" and ready["observedGeneration"] == obj["metadata"]["generation"]

    ps = pods(kube, namespace, "my-app")
    names = sorted(p.metadata.name for p in ps)
    rev = ps[0].metadata.labels["kiln.dev/revision"]
    assert names == [f"my-app-{rev}-0", f"my-app-{rev}-1"]
    for p in ps:
        labels = p.metadata.labels
        assert labels["app.kubernetes.io/managed-by"] == "kiln"
        assert labels["app.kubernetes.io/instance"] == "my-app"
        assert labels["kiln.dev/workload"] == "my-app"
        assert labels["kiln.dev/artifact"] == "my-app"
        assert digest.removeprefix("sha256:").startswith(labels["kiln.dev/spec-digest"])
        assert p.metadata.annotations["kiln.dev/spec-digest"] == digest
        ref = p.metadata.owner_references[0]
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("Workload", "my-app", wl["metadata"]["uid"], True)
        sc = p.spec.containers[0].security_context
        assert sc.allow_privilege_escalation is False and sc.capabilities.drop == ["ALL"]

    svc = kube.core.read_namespaced_service("my-app-dev", namespace)
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.selector == {"kiln.dev/workload": "my-app"}
    assert [(p.name, p.port) for p in svc.spec.ports] == [("http", 8080)]
    assert svc.metadata.owner_references[0].uid == wl["metadata"]["uid"]
    kube.wait(lambda: {"ArtifactCreated", "Created"} <= set(events(kube, namespace, "my-app")),
              what="Created events")
    # What the operator has handled is known from status.observedGeneration, not recorded on the object.
    annotations = get(kube, namespace, "workloads", "my-app")["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("operator.kiln.dev/")], annotations


def test_no_service_without_ports(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("quiet", inline=[container(port=None)]))
    wait_running(kube, namespace, "quiet")
    assert not kube.exists(kube.core.read_namespaced_service, "quiet-dev", namespace)


def test_replicas_scale_up_and_down(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("scaled", inline=[container()]))
    wait_running(kube, namespace, "scaled")
    patch(kube, namespace, "workloads", "scaled", {"spec": {"replicas": 3}})
    wait_running(kube, namespace, "scaled", replicas=3)
    patch(kube, namespace, "workloads", "scaled", {"spec": {"replicas": 1}})
    wait_running(kube, namespace, "scaled", replicas=1)
    assert {p.metadata.labels["kiln.dev/index"] for p in pods(kube, namespace, "scaled")} == {"0"}


def test_stop_and_start(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("stoppable", inline=[container()]))
    wait_running(kube, namespace, "stoppable")
    patch(kube, namespace, "workloads", "stoppable", {"spec": {"state": "Stopped"}})

    def stopped() -> bool:
        obj = get(kube, namespace, "workloads", "stoppable")
        ready = Kube.condition(obj, "Ready") or {}
        return (obj["status"].get("state") == "Stopped" and ready.get("reason") == "Stopped"
                and not kube.core.list_namespaced_pod(namespace, label_selector="kiln.dev/workload=stoppable").items)

    kube.wait(stopped, what="workload stopped with no pods left")
    assert kube.exists(kube.custom.get_namespaced_custom_object, G, V, namespace, "workloads", "stoppable")
    patch(kube, namespace, "workloads", "stoppable", {"spec": {"state": "Running"}})
    wait_running(kube, namespace, "stoppable")
    kube.wait(lambda: {"Stopped", "Started"} <= set(events(kube, namespace, "stoppable")),
              what="Stopped and Started events")


def test_restart_annotation_replaces_pods(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("restartable", inline=[container()], replicas=2))
    wait_running(kube, namespace, "restartable", replicas=2)
    before = pod_names(kube, namespace, "restartable")
    patch(kube, namespace, "workloads", "restartable",
          {"metadata": {"annotations": {"kiln.dev/restartedAt": "2026-11-30T12:00:00Z"}}})
    kube.wait(lambda: (n := pod_names(kube, namespace, "restartable")) and n.isdisjoint(before) and len(n) == 2,
              what="all pods replaced")
    obj = wait_running(kube, namespace, "restartable", replicas=2)
    assert obj["status"]["restartedAt"] == "2026-11-30T12:00:00Z"
    kube.wait(lambda: "Restarted" in events(kube, namespace, "restartable"), what="Restarted event")


def test_deleted_and_failed_pods_are_replaced(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("healer", inline=[container()], replicas=2))
    wait_running(kube, namespace, "healer", replicas=2)
    victim, other = sorted(pod_names(kube, namespace, "healer"))
    uid = kube.core.read_namespaced_pod(victim, namespace).metadata.uid
    kube.core.delete_namespaced_pod(victim, namespace)

    def replaced() -> bool:
        try:
            p = kube.core.read_namespaced_pod(victim, namespace)
        except ApiException:
            return False
        return bool(p.metadata.uid != uid)

    kube.wait(replaced, what="deleted pod recreated")
    wait_running(kube, namespace, "healer", replicas=2)

    # A failed pod (as a kubelet would report it) is replaced too.
    uid = kube.core.read_namespaced_pod(other, namespace).metadata.uid
    kube.core.patch_namespaced_pod_status(other, namespace, {"status": {"phase": "Failed", "conditions": [
        {"type": "Ready", "status": "False"}]}})
    kube.wait(lambda: _uid(kube, namespace, other) not in (None, uid), what="failed pod replaced")
    wait_running(kube, namespace, "healer", replicas=2)


def _uid(kube: Kube, ns: str, name: str) -> str | None:
    try:
        return str(kube.core.read_namespaced_pod(name, ns).metadata.uid)
    except ApiException:
        return None


def test_missing_artifact_ref_reports_then_starts(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("waiting", ref="later"))

    def not_found() -> dict[str, Any] | None:
        c = Kube.condition(get(kube, namespace, "workloads", "waiting"), "Ready")
        return c if c and c["reason"] == "ArtifactNotFound" else None

    c = kube.wait(not_found, what="ArtifactNotFound condition")
    assert c["status"] == "False" and "Artifact later not found" in c["message"]
    assert get(kube, namespace, "workloads", "waiting")["status"]["state"] == "Pending"
    create(kube, namespace, artifact("later", [container()]))
    wait_running(kube, namespace, "waiting")


# --- draft changes ----------------------------------------------------------------------------


def test_draft_change_restarts_every_workload_running_it(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, artifact("shared", [container("registry.example/app:1")], displayName="Shared"))
    for wl in ("one", "two"):
        create(kube, namespace, workload(wl, ref="shared"))
    old = {wl: wait_running(kube, namespace, wl)["status"]["artifact"]["specDigest"] for wl in ("one", "two")}
    names = {wl: pod_names(kube, namespace, wl) for wl in ("one", "two")}

    # displayName / description: nothing restarts.
    patch(kube, namespace, "artifacts", "shared", {"spec": {"displayName": "Renamed", "description": "v2"}})
    kube.wait(lambda: get(kube, namespace, "artifacts", "shared")["status"].get("observedGeneration") == 2,
              what="artifact observed")
    assert get(kube, namespace, "artifacts", "shared")["status"]["specDigest"] == old["one"]
    for wl in ("one", "two"):
        assert pod_names(kube, namespace, wl) == names[wl]
        assert "Restarted" not in events(kube, namespace, wl)

    # A container change restarts both onto the new spec.
    patch(kube, namespace, "artifacts", "shared",
          {"spec": {"containers": [container("registry.example/app:2")]}})
    new = kube.wait(lambda: (d := get(kube, namespace, "artifacts", "shared")["status"]["specDigest"]) != old["one"]
                    and d, what="new digest")
    for wl in ("one", "two"):
        kube.wait(lambda wl=wl: get(kube, namespace, "workloads", wl)["status"]["artifact"]["specDigest"] == new,
                  what=f"{wl} onto the new spec")
        wait_running(kube, namespace, wl)
        ps = pods(kube, namespace, wl)
        assert {p.metadata.annotations["kiln.dev/spec-digest"] for p in ps} == {new}
        assert ps[0].spec.containers[0].image == "registry.example/app:2"
        assert pod_names(kube, namespace, wl).isdisjoint(names[wl])
        kube.wait(lambda wl=wl: "Restarted" in events(kube, namespace, wl), what="Restarted event")


def test_a_manual_workload_waits_for_a_restart(kube: Kube, operator: Operator, namespace: str) -> None:
    """updatePolicy Manual: a Draft change sets UpdateAvailable and the pods keep running the old spec
    (a deleted pod comes back as it was) until the restartedAt annotation moves them onto the new one."""
    create(kube, namespace, artifact("draft", [container("registry.example/app:1")]))
    auto = workload("auto", ref="draft")
    manual = workload("manual", ref="draft", replicas=2, updatePolicy="Manual")
    for body in (auto, manual):
        create(kube, namespace, body)
    old = wait_running(kube, namespace, "manual", replicas=2)["status"]["artifact"]["specDigest"]
    wait_running(kube, namespace, "auto")
    before = pod_names(kube, namespace, "manual")
    patch(kube, namespace, "artifacts", "draft", {"spec": {"containers": [container("registry.example/app:2")]}})

    def announced() -> dict[str, Any] | None:
        c = Kube.condition(get(kube, namespace, "workloads", "manual"), "UpdateAvailable")
        return c if c and c["status"] == "True" else None
    c = announced() or kube.wait(announced, what="UpdateAvailable on the Manual workload")
    assert "kubectl kiln restart workload manual" in c["message"], c
    def images(wl: str) -> set[str]:
        return {p.spec.containers[0].image for p in pods(kube, namespace, wl)}

    kube.wait(lambda: images("auto") == {"registry.example/app:2"}, what="the Automatic workload restarted")
    assert pod_names(kube, namespace, "manual") == before
    assert get(kube, namespace, "workloads", "manual")["status"]["artifact"]["specDigest"] == old
    # A pod lost meanwhile comes back as it was.
    gone = sorted(before)[0]
    kube.core.delete_namespaced_pod(gone, namespace, grace_period_seconds=0)
    kube.wait(lambda: gone in pod_names(kube, namespace, "manual") and len(pods(kube, namespace, "manual")) == 2,
              what="the lost pod back")
    assert images("manual") == {"registry.example/app:1"}

    patch(kube, namespace, "workloads", "manual", {"metadata": {"annotations": {
        "kiln.dev/restartedAt": "2026-12-03T00:00:00Z"}}})
    kube.wait(lambda: images("manual") == {"registry.example/app:2"} and len(pods(kube, namespace, "manual")) == 2,
              what="the restart onto the new spec")
    wait_running(kube, namespace, "manual", replicas=2)
    kube.wait(lambda: (Kube.condition(get(kube, namespace, "workloads", "manual"), "UpdateAvailable") or {}
                       ).get("status") == "False", what="UpdateAvailable False")


def test_kubectl_replace_of_draft_restarts(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("my-app", inline=[container()]))
    before = wait_running(kube, namespace, "my-app")["status"]["artifact"]["specDigest"]
    replacement = artifact("my-app", [container("registry.example/app:2", readinessProbe={
        "httpGet": {"path": "/healthz", "port": "http"}})], description="v2")
    kube.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(replacement))
    kube.wait(lambda: get(kube, namespace, "workloads", "my-app")["status"]["artifact"]["specDigest"] != before,
              what="workload restarted onto the replaced spec")
    wait_running(kube, namespace, "my-app")
    p = pods(kube, namespace, "my-app")[0]
    assert p.spec.containers[0].readiness_probe.http_get.path == "/healthz"


# --- admission --------------------------------------------------------------------------------


@pytest.mark.parametrize(("containers", "field"), [
    ([{"name": "app"}], "image"),
    ([{"name": "app", "image": "x", "ports": [{"containerPort": 70000}]}], "containerPort"),
    ([{"name": "app", "image": "x"}, {"name": "app", "image": "y"}], "containers"),
    ([], "containers"),
])
def test_nonsense_is_rejected_naming_the_field(kube: Kube, crds: None, namespace: str,
                                               containers: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(ApiException) as err:
        create(kube, namespace, artifact("bad", containers))
    assert err.value.status == 422
    assert field in json.loads(err.value.body)["message"]


def test_inline_artifact_cannot_change(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("fixed", inline=[container()]))
    with pytest.raises(ApiException) as err:
        patch(kube, namespace, "workloads", "fixed",
              {"spec": {"artifact": {"containers": [container("registry.example/app:9")]}}})
    msg = json.loads(err.value.body)["message"]
    assert "spec.artifact" in msg and "Artifact fixed" in msg


def test_kubectl_get_columns(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("cols", inline=[container()]))
    wait_running(kube, namespace, "cols")
    out = kube.kubectl("get", "kiln", "-n", namespace).stdout
    assert "workload.kiln.dev/cols" in out and "artifact.kiln.dev/cols" in out
    wl = kube.kubectl("get", "workloads.kiln.dev", "-n", namespace).stdout.splitlines()
    header = wl[0].split()
    assert {"ARTIFACT", "STATE", "READY", "ENDPOINT"} <= set(header), header
    assert "Running" in wl[1] and f"http://cols-dev.{namespace}.svc:8080" in wl[1], wl
    assert get(kube, namespace, "workloads", "cols")["status"]["endpoints"] == [
        {"name": "http", "url": f"http://cols-dev.{namespace}.svc:8080"}]


# --- resilience -------------------------------------------------------------------------------


def test_operator_killed_mid_restart_converges(kube: Kube, operator: Operator, namespace: str) -> None:
    names = [f"r{i}" for i in range(6)]
    create(kube, namespace, artifact("base", [container("registry.example/app:1")]))
    for n in names:
        create(kube, namespace, workload(n, ref="base"))
    for n in names:
        wait_running(kube, namespace, n)
    patch(kube, namespace, "artifacts", "base", {"spec": {"containers": [container("registry.example/app:2")]}})
    # Kill the operator as soon as the restart is under way (the first new pod exists), before it ends.
    old = get(kube, namespace, "workloads", names[0])["status"]["artifact"]["specDigest"]
    kube.wait(lambda: any(p.metadata.annotations["kiln.dev/spec-digest"] != old
                          for p in kube.core.list_namespaced_pod(namespace).items),
              what="restart under way", interval=0.02)
    operator.kill()
    try:
        # Edits made while it is down.
        patch(kube, namespace, "workloads", "r0", {"spec": {"replicas": 2}})
        patch(kube, namespace, "workloads", "r1", {"spec": {"state": "Stopped"}})
        patch(kube, namespace, "artifacts", "base", {"spec": {"containers": [container("registry.example/app:3")]}})
    finally:
        # The webhook configurations the killed operator left (pointing at its dead server) are
        # replaced by the new one at start.
        operator.start()
    kube.wait(lambda: get(kube, namespace, "artifacts", "base")["status"]["observedGeneration"] == 3,
              what="artifact observed after restart")
    digest = get(kube, namespace, "artifacts", "base")["status"]["specDigest"]
    for n in names:
        if n == "r1":
            continue
        want = 2 if n == "r0" else 1
        wait_running(kube, namespace, n, replicas=want)
        kube.wait(lambda n=n: {p.metadata.annotations["kiln.dev/spec-digest"] for p in pods(kube, namespace, n)}
                  == {digest}, what=f"{n} on the latest spec")
    kube.wait(lambda: not kube.core.list_namespaced_pod(namespace, label_selector="kiln.dev/workload=r1").items,
              what="r1 stopped")
    # No duplicates and no orphans: exactly the wanted pods exist, each owned by its workload.
    all_pods = kube.core.list_namespaced_pod(namespace).items
    assert len(all_pods) == 2 + 4
    for p in all_pods:
        assert p.metadata.owner_references and p.metadata.owner_references[0].kind == "Workload"
        assert p.metadata.annotations["kiln.dev/spec-digest"] == digest


def test_crash_looping_pod_makes_the_workload_failed(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("crashy", inline=[container()]))
    wait_running(kube, namespace, "crashy")
    [pod] = pods(kube, namespace, "crashy")
    name = pod.metadata.name

    def report(ready: bool, waiting: dict[str, str] | None) -> None:  # as a kubelet would
        state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-11-30T12:00:00Z"}}
        kube.core.patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "app", "ready": ready, "restartCount": 5, "imageID": "",
                                   "image": pod.spec.containers[0].image, "state": state}]}})

    report(False, {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"})

    def failed() -> dict[str, Any] | None:
        obj = get(kube, namespace, "workloads", "crashy")
        return obj if obj["status"].get("state") == "Failed" else None

    obj = kube.wait(failed, what="workload Failed")
    ready = Kube.condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodsFailing"
    assert f"pod {name} container app: CrashLoopBackOff" in ready["message"]
    report(True, None)
    wait_running(kube, namespace, "crashy")


def test_a_deleted_dev_service_is_put_back(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("served", inline=[container()]))
    wait_running(kube, namespace, "served")
    uid = kube.core.read_namespaced_service("served-dev", namespace).metadata.uid
    kube.core.delete_namespaced_service("served-dev", namespace)

    def back() -> bool:
        try:
            return bool(kube.core.read_namespaced_service("served-dev", namespace).metadata.uid != uid)
        except ApiException:
            return False

    kube.wait(back, what="the Service recreated")
