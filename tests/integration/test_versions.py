"""Collections and versions, deploying by version, and rollback: through the API server, with the real
operator and its webhooks. (Image digests against the local registry: tests/e2e/test_digests.py.)"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.test_deployments import deployment, wait_ready
from tests.integration.test_governance import kubectl_as
from tests.integration.test_registration import register, rejected
from tests.integration.test_workloads import artifact, container, create, get, patch
from tests.kube import Kube, Operator
from tests.unit.test_registry import PASSWORD, USER, docker_registry, push_image

pytestmark = pytest.mark.cluster
G, V = "kiln.dev", "v1alpha1"


def table(kube: Kube, *args: str) -> list[dict[str, str]]:
    """`kubectl get` as rows of {column: value}, cut at the header's columns (values may be empty)."""
    lines = kube.kubectl("get", *args).stdout.splitlines()
    starts = [i for i, ch in enumerate(lines[0]) if ch != " " and (i == 0 or lines[0][i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{lines[0][a:b].strip(): line[a:b].strip() for a, b in bounds} for line in lines[1:]]


def version_of(kube: Kube, ns: str, name: str) -> int:
    art = kube.wait(lambda: (a := get(kube, ns, "artifacts", name)).get("status", {}).get("version") and a,
                    what=f"artifact {name}'s version in its status")
    assert art["metadata"]["labels"]["kiln.dev/version"] == str(art["status"]["version"])
    assert art["metadata"]["labels"]["kiln.dev/collection"] == art["status"]["collection"]
    return int(art["status"]["version"])


def registered_version(kube: Kube, ns: str, name: str, collection: str, image: str = "registry.example/app:1") -> int:
    create(kube, ns, artifact(name, [container(image)], collection=collection))
    register(kube, ns, name)
    return version_of(kube, ns, name)


def test_registration_numbers_a_collection_and_kubectl_shows_it(kube: Kube, operator: Operator,
                                                                 namespace: str) -> None:
    ns = namespace
    assert [registered_version(kube, ns, f"scorer-{i}", "scorer", f"registry.example/scorer:{i}")
            for i in (1, 2, 3)] == [1, 2, 3]
    # Another collection counts on its own; an Artifact without one has no version.
    assert registered_version(kube, ns, "other-1", "other") == 1
    create(kube, ns, artifact("loose", [container()]))
    loose = register(kube, ns, "loose")
    assert "kiln.dev/version" not in (loose["metadata"].get("labels") or {})
    assert "version" not in kube.wait(lambda: (a := get(kube, ns, "artifacts", "loose"))["status"].get(
        "lifecycle") == "Registered" and a, what="loose registered")["status"]
    # A Draft of a collection is labelled with it, and has no version yet.
    create(kube, ns, artifact("scorer-next", [container()], collection="scorer"))
    draft = get(kube, ns, "artifacts", "scorer-next")
    assert draft["metadata"]["labels"] == {"kiln.dev/collection": "scorer"}

    rows = {r["NAME"]: r for r in table(kube, "artifacts.kiln.dev", "-n", ns, "-l", "kiln.dev/collection=scorer")}
    assert set(rows) == {"scorer-1", "scorer-2", "scorer-3", "scorer-next"}
    assert [rows["scorer-3"][c] for c in ("LIFECYCLE", "COLLECTION", "VERSION", "READY")] == [
        "Registered", "scorer", "3", "True"]
    assert [rows["scorer-next"][c] for c in ("LIFECYCLE", "COLLECTION", "VERSION")] == ["Draft", "scorer", ""]
    assert kube.wait(lambda: "registered as version 2 of scorer" in (
        Kube.condition(get(kube, ns, "artifacts", "scorer-2"), "Ready") or {}).get("message", ""),
        what="the Ready message names the version")


def test_concurrent_registrations_get_distinct_versions_never_reused(kube: Kube, operator: Operator,
                                                                     namespace: str) -> None:
    ns, n = namespace, 20
    for i in range(n):
        create(kube, ns, artifact(f"model-{i}", [container(f"registry.example/model:{i}")], collection="model"))

    def registering(i: int) -> None:
        patch(kube, ns, "artifacts", f"model-{i}", {"spec": {"lifecycle": "Registered"}})

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(registering, range(n)))
    versions = {f"model-{i}": version_of(kube, ns, f"model-{i}") for i in range(n)}
    # Distinct numbers; a registration the API server admitted twice (a storage conflict) while another
    # took a number in between may leave a gap (docs/api.md), never a duplicate.
    assert len(set(versions.values())) == n and min(versions.values()) >= 1, versions
    assert max(versions.values()) <= 2 * n, versions

    # Deleting the latest does not free its number; nor does a dry run take one.
    latest = max(versions, key=lambda k: versions[k])
    kube.custom.delete_namespaced_custom_object(G, V, ns, "artifacts", latest)
    kube.wait(lambda: not kube.exists(kube.custom.get_namespaced_custom_object, G, V, ns, "artifacts", latest),
              what="the latest version deleted")
    create(kube, ns, artifact("model-late", [container()], collection="model"))
    dry = kube.kubectl("patch", "artifact.kiln.dev", "model-late", "-n", ns, "--type=merge", "--dry-run=server",
                       "-p", '{"spec":{"lifecycle":"Registered"}}', "-o", "json")
    top = max(versions.values())
    assert int(json.loads(dry.stdout)["metadata"]["labels"]["kiln.dev/version"]) > top
    register(kube, ns, "model-late")
    assert version_of(kube, ns, "model-late") > top  # the deleted one's number is not given again


def test_users_cannot_forge_versions_collections_or_image_records(kube: Kube, operator: Operator,
                                                                  namespace: str) -> None:
    """An editor of Artifacts labels, annotates or re-collects them: the registration's record stays."""
    ns, user = namespace, "mallory"
    for persona in ("developer", "registrar"):
        kube.kubectl("-n", ns, "create", "rolebinding", f"mallory-{persona}", f"--clusterrole=kiln-{persona}",
                     f"--user={user}")
    assert registered_version(kube, ns, "real-1", "scorer") == 1
    before = get(kube, ns, "artifacts", "real-1")

    # A Draft that claims a version gets none.
    forged = artifact("fake-9", [container()], collection="scorer")
    forged["metadata"]["labels"] = {"kiln.dev/version": "9", "kiln.dev/collection": "other"}
    forged["metadata"]["annotations"] = {"kiln.dev/images": json.dumps([{"container": "app", "image": "x",
                                                                         "digest": "sha256:" + "0" * 64}])}
    assert kubectl_as(kube, user, ns, "create", "-f", "-", body=forged).returncode == 0
    made = get(kube, ns, "artifacts", "fake-9")
    assert made["metadata"]["labels"] == {"kiln.dev/collection": "scorer"}
    assert "kiln.dev/images" not in (made["metadata"].get("annotations") or {})
    # Relabelling, or rewriting the image record of, a registered one changes nothing.
    for args in (("label", "--overwrite", "artifact.kiln.dev", "real-1", "kiln.dev/version=7"),
                 ("label", "artifact.kiln.dev", "real-1", "kiln.dev/version-"),
                 ("label", "--overwrite", "artifact.kiln.dev", "real-1", "kiln.dev/collection=other"),
                 ("annotate", "--overwrite", "artifact.kiln.dev", "real-1", "kiln.dev/images=[]")):
        r = kubectl_as(kube, user, ns, *args)
        assert r.returncode == 0, r.stderr
        now = get(kube, ns, "artifacts", "real-1")
        assert now["metadata"]["labels"] == before["metadata"]["labels"], args
        assert now["metadata"]["annotations"]["kiln.dev/images"] == before["metadata"]["annotations"][
            "kiln.dev/images"], args
    # The collection of a registered Artifact is locked.
    r = kubectl_as(kube, user, ns, "patch", "artifact.kiln.dev", "real-1", "--type=merge", "-p",
                   '{"spec":{"collection":"other"}}')
    assert r.returncode != 0 and "spec.collection is locked" in r.stderr, r.stderr


def test_deploy_by_version_switch_and_roll_back(kube: Kube, operator: Operator, namespace: str) -> None:
    ns = namespace
    for i in (1, 2, 3):
        assert registered_version(kube, ns, f"scorer-v{i}", "scorer", f"registry.example/scorer:{i}") == i
    create(kube, ns, deployment("prod") | {"spec": {"artifactRef": {"collection": "scorer", "version": 2},
                                                    "revisionHistoryLimit": 4}})
    dep = wait_ready(kube, ns, "prod")
    art = dep["status"]["artifact"]
    assert (art["name"], art["collection"], art["version"]) == ("scorer-v2", "scorer", 2)
    assert art["uid"] == get(kube, ns, "artifacts", "scorer-v2")["metadata"]["uid"]
    apps = kube.apps.read_namespaced_deployment("prod", ns)
    assert apps.spec.revision_history_limit == 4
    assert apps.spec.template.spec.containers[0].image == "registry.example/scorer:2"  # a skipped registry

    def replica_set_running() -> str:
        def check() -> str | None:
            d = kube.apps.read_namespaced_deployment("prod", ns)
            if d.status.observed_generation != d.metadata.generation or d.status.updated_replicas != 1:
                return None
            sets = kube.apps.list_namespaced_replica_set(ns, label_selector="kiln.dev/deployment=prod").items
            live = [rs for rs in sets if rs.spec.replicas]
            return live[0].metadata.name if len(live) == 1 else None
        return kube.wait(check, what="one ReplicaSet running")

    rs_v2 = replica_set_running()

    def switch(version: int) -> dict[str, Any]:
        patch(kube, ns, "deployments", "prod", {"spec": {"artifactRef": {"version": version}}})
        return kube.wait(lambda: (d := get(kube, ns, "deployments", "prod"))["status"]["artifact"]["version"] == version
                         and (Kube.condition(d, "Ready") or {}).get("status") == "True" and d,
                         what=f"production on version {version}")

    switch(3)
    rs_v3 = replica_set_running()
    assert rs_v3 != rs_v2
    dep = switch(2)
    assert replica_set_running() == rs_v2  # the ReplicaSet kept from before runs again
    dep = switch(3)
    assert replica_set_running() == rs_v3
    rollouts = [(h["action"], h.get("fromVersion"), h.get("version"))
                for h in dep["status"]["history"] if h["action"] in ("Created", "ArtifactSwitched", "RolledBack")]
    assert rollouts == [("Created", None, 2), ("ArtifactSwitched", 2, 3), ("RolledBack", 3, 2),
                        ("RolledBack", 2, 3)]
    last = dep["status"]["history"][-1]
    assert last["message"].startswith("rolled back: Artifact scorer-v2 (v2) -> scorer-v3 (v3)"), last
    events = kube.core.list_namespaced_event(ns, field_selector="involvedObject.name=prod").items
    assert any(e.reason == "RolledBack" for e in events)
    [row] = table(kube, "deployments.kiln.dev", "prod", "-n", ns)
    assert (row["ARTIFACT"], row["VERSION"]) == ("scorer-v3", "3")


def test_a_version_that_does_not_exist_is_refused_then_reported(kube: Kube, operator: Operator,
                                                                 namespace: str) -> None:
    ns = namespace
    registered_version(kube, ns, "scorer-v1", "scorer")
    body = deployment("prod") | {"spec": {"artifactRef": {"collection": "scorer", "version": 5}}}
    msg = rejected(kube.custom.create_namespaced_custom_object, G, V, ns, "deployments", body)
    assert "version 5 of collection scorer not found" in msg, msg
    # Name and version together, or neither: the schema says which to give.
    both = deployment("prod") | {"spec": {"artifactRef": {"name": "scorer-v1", "collection": "scorer", "version": 1}}}
    msg = rejected(kube.custom.create_namespaced_custom_object, G, V, ns, "deployments", both)
    assert "set name, or collection and version" in msg, msg
    # Admitted while it existed, then deleted: reported, production untouched.
    create(kube, ns, deployment("prod") | {"spec": {"artifactRef": {"collection": "scorer", "version": 1}}})
    wait_ready(kube, ns, "prod")
    with pytest.raises(ApiException) as e:  # in use: the webhook refuses to delete it
        kube.custom.delete_namespaced_custom_object(G, V, ns, "artifacts", "scorer-v1")
    assert "in use by Deployment prod" in json.loads(e.value.body)["message"]


def test_a_private_registry_with_an_image_pull_secret(kube: Kube, operator: Operator, namespace: str,
                                                      tmp_path: Path) -> None:
    """Registration resolves an image in a registry that wants credentials with the image pull secret the
    Artifact names; without it, the registration is refused saying so; and whoever names a Secret must be
    allowed to read it."""
    ns = namespace
    (tmp_path / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    with docker_registry(tmp_path, {"htpasswd": {"realm": "kiln", "path": str(tmp_path / "htpasswd")}}) as url:
        host = urlsplit(url).netloc
        digest = push_image(url, "team/model", "v1", auth=(USER, PASSWORD))["digest"]
        image = f"{host}/team/model:v1"

        create(kube, ns, artifact("anonymous", [container(image)]))
        msg = rejected(kube.custom.patch_namespaced_custom_object, G, V, ns, "artifacts", "anonymous",
                       {"spec": {"lifecycle": "Registered"}})
        assert msg.startswith(f"admission webhook \"record-registration.kiln.dev\" denied the request: Artifact "
                              f"anonymous: spec.containers[0].image: cannot register: image {image}: registry {host}: "
                              "unauthorized (401)"), msg

        config = {"auths": {host: {"username": USER, "password": PASSWORD}}}
        kube.core.create_namespaced_secret(ns, {
            "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}})
        create(kube, ns, artifact("private", [container(image)], imagePullSecrets=[{"name": "regcred"}]))
        register(kube, ns, "private")
        art = kube.wait(lambda: (a := get(kube, ns, "artifacts", "private"))["status"].get("images") and a,
                        what="the private image's digest")
        assert art["status"]["images"] == [{"container": "app", "image": image, "digest": digest}]

    # A developer who may not read the Secret cannot have Kiln's pods (or its registration) use it.
    kube.kubectl("-n", ns, "create", "rolebinding", "dora-developer", "--clusterrole=kiln-developer", "--user=dora")
    r = kubectl_as(kube, "dora", ns, "create", "-f", "-",
                   body=artifact("borrowed", [container(image)], imagePullSecrets=[{"name": "regcred"}]))
    assert r.returncode != 0 and "spec.imagePullSecrets[0]: dora may not get Secret regcred" in r.stderr, r.stderr
