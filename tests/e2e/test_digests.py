"""Image digests at registration, against the local cluster's registry on the real node: a registered
Artifact records each image's digest, production runs the image by digest, and a tag pushed again later
changes nothing in production, while a new registration gets the new digest."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import answer, service_url
from tests.e2e.tutorial import FEATURES
from tests.integration.test_deployments import deployment, wait_ready
from tests.integration.test_registration import register, rejected
from tests.integration.test_workloads import artifact, container, create, get
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
G, V = "kiln.dev", "v1alpha1"
MANIFEST_TYPES = ", ".join(("application/vnd.oci.image.index.v1+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json",
                            "application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"))


def _registry(real_node: dict[str, Any]) -> str:
    return f"http://{real_node['registry']}"


def manifest(real_node: dict[str, Any], tag: str) -> tuple[bytes, str, str]:
    """The scorer's manifest under a tag: its bytes, media type and digest, as the registry serves them."""
    req = urllib.request.Request(f"{_registry(real_node)}/v2/kiln/scorer/manifests/{tag}",
                                 headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read(), r.headers["Content-Type"], r.headers["Docker-Content-Digest"]


def push_tag(real_node: dict[str, Any], source: str, tag: str) -> str:
    """Push the image of one tag under another (the same manifest: its blobs are there): a re-push."""
    body, media_type, digest = manifest(real_node, source)
    req = urllib.request.Request(f"{_registry(real_node)}/v2/kiln/scorer/manifests/{tag}", data=body,
                                 method="PUT", headers={"Content-Type": media_type})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    return digest


def scorer(name: str, tag: str) -> dict[str, Any]:
    return artifact(name, [container(f"127.0.0.1:5001/kiln/scorer:{tag}", readinessProbe={
        "httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1})], collection="scorer")


def test_production_runs_the_digest_resolved_at_registration(kube: Kube, operator: Operator, real_namespace: str,
                                                             real_node: dict[str, Any],
                                                             registry_images: dict[str, str]) -> None:
    ns, tag = real_namespace, f"moving-{uuid.uuid4().hex[:8]}"
    v1 = push_tag(real_node, "v1", tag)
    create(kube, ns, scorer("model-a", tag))
    register(kube, ns, "model-a")
    art = kube.wait(lambda: (a := get(kube, ns, "artifacts", "model-a"))["status"].get("images") and a,
                    what="the image digests in the status")
    assert art["status"]["images"] == [{"container": "app", "image": f"127.0.0.1:5001/kiln/scorer:{tag}",
                                        "digest": v1}]
    assert art["status"]["version"] == 1
    assert json.loads(art["metadata"]["annotations"]["kiln.dev/images"])[0]["digest"] == v1

    create(kube, ns, deployment("prod", artifact_ref="model-a"))
    dep = wait_ready(kube, ns, "prod")
    assert dep["status"]["artifact"]["specDigest"] == art["status"]["specDigest"]
    pinned = f"127.0.0.1:5001/kiln/scorer@{v1}"
    pods = kube.core.list_namespaced_pod(ns, label_selector="kiln.dev/deployment=prod").items
    assert [c.image for p in pods for c in p.spec.containers] == [pinned]
    url = service_url(kube, ns, "prod", "/predict")
    kube.wait(lambda: (answer(url, FEATURES) or {}).get("version") == "v1", what="production answers", timeout=60)

    # The tag now names another image: production, even a new pod of it, runs what was registered.
    v2 = push_tag(real_node, "v2", tag)
    assert v2 != v1
    kube.core.delete_namespaced_pod(pods[0].metadata.name, ns)

    def replaced() -> list[Any]:
        return [p for p in kube.core.list_namespaced_pod(ns, label_selector="kiln.dev/deployment=prod").items
                if p.metadata.uid != pods[0].metadata.uid and any(
                    c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]

    new = kube.wait(replaced, what="a new production pod, ready", timeout=90)
    assert {c.image for p in new for c in p.spec.containers} == {pinned}
    assert {s.image_id for p in new for s in p.status.container_statuses} == {pinned}
    assert kube.wait(lambda: answer(url, FEATURES), what="production answers", timeout=60)["version"] == "v1"

    # A copy registered now gets the new digest, and the next version; its spec digest differs.
    create(kube, ns, scorer("model-b", tag))
    register(kube, ns, "model-b")
    copy = kube.wait(lambda: (a := get(kube, ns, "artifacts", "model-b"))["status"].get("images") and a,
                     what="the copy's image digests")
    assert copy["status"]["images"][0]["digest"] == v2
    assert copy["status"]["version"] == 2
    assert copy["status"]["specDigest"] != art["status"]["specDigest"]


def test_an_image_that_cannot_be_resolved_is_a_registration_error(kube: Kube, operator: Operator,
                                                                  real_namespace: str, real_node: dict[str, Any],
                                                                  registry_images: dict[str, str]) -> None:
    ns = real_namespace
    create(kube, ns, scorer("ghost", "no-such-tag"))
    msg = rejected(kube.custom.patch_namespaced_custom_object, G, V, ns, "artifacts", "ghost",
                   {"spec": {"lifecycle": "Registered"}})
    assert "spec.containers[0].image" in msg and "127.0.0.1:5001/kiln/scorer:no-such-tag" in msg, msg
    assert "MANIFEST_UNKNOWN" in msg or "404" in msg, msg
    ghost = get(kube, ns, "artifacts", "ghost")
    assert ghost["spec"]["lifecycle"] == "Draft" and "kiln.dev/version" not in ghost["metadata"].get("labels", {})
    # Nothing taken: the next registration of the collection is version 1.
    with pytest.raises(urllib.error.HTTPError):
        manifest(real_node, "no-such-tag")
    create(kube, ns, scorer("real", "v1"))
    assert register(kube, ns, "real")["metadata"]["labels"]["kiln.dev/version"] == "1"
