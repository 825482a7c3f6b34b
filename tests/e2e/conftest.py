"""End-to-end fixtures: the local cluster's real node, its registry with the project's images, HTTP calls
into the cluster.

Where no real node can run (not root, no overlayfs, ...) these tests skip with the reason `kiln cluster
up` gave, unless ``KILN_REQUIRE_REAL_NODE=1`` (as CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln_dev import cluster, images
from tests.conftest import make_namespace
from tests.kube import FAKE_REGISTRIES, Kube


def _missing(reason: str) -> None:
    if os.environ.get("KILN_REQUIRE_REAL_NODE") == "1":
        pytest.fail(f"KILN_REQUIRE_REAL_NODE=1, but there is no real node: {reason}", pytrace=False)
    pytest.skip(f"no real node: {reason}")


@pytest.fixture(scope="session")
def real_node(kube: Kube) -> dict[str, Any]:
    """The local cluster's real node (state.json's "node" entry), or a skip saying why there is none."""
    if os.environ.get("KILN_TEST_KUBECONFIG"):
        _missing("KILN_TEST_KUBECONFIG points at another cluster: the end-to-end tests need the local "
                 "cluster's real node and registry")
    st = cluster.read_state() or {}
    info = dict(st.get("node") or {})
    if "slot" not in info:
        _missing(info.get("unavailable", "the local cluster has none"))
    return info


@pytest.fixture(scope="session")
def registry_images(real_node: dict[str, Any]) -> dict[str, str]:
    """The project's images built (cached by content) and pushed to the local registry; their names as
    pods see them, by image name and tag ("operator", "scorer:v1", ...)."""
    refs = images.build(cluster.build_binaries())
    images.push(refs, int(real_node["registry"].rsplit(":", 1)[1]))
    names = {}
    for image, ref in refs.items():
        key, *tagged = images.remote(image, ref)
        names[image.name] = key
        names.update({f"{image.name}:{t.rsplit(':', 1)[1]}": t for t in tagged})
    return names


@pytest.fixture
def real_namespace(kube: Kube, real_node: dict[str, Any], registry_images: dict[str, str]) -> Iterator[str]:
    """A fresh namespace whose pods run on the real node."""
    name = make_namespace(kube, node="real")
    yield name
    kube.core.delete_namespace(name, propagation_policy="Background")


def call(url: str, data: dict[str, Any] | None = None, timeout: float = 3.0) -> dict[str, Any]:
    """One HTTP request from this host into the cluster (a ClusterIP goes through kube-proxy)."""
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return dict(json.loads(r.read()))


def answer(url: str, data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON answer, or None when nothing answers (refused, unreachable, timed out, an HTTP error)."""
    try:
        return call(url, data)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def service_url(kube: Kube, namespace: str, name: str, path: str) -> str:
    svc = kube.core.read_namespaced_service(name, namespace)
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}{path}"


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def install_chart(kube: Kube, operator: Any, image: str, helm_home: Path, release: str, personas: str,
                  timeout: str = "240s") -> tuple[Any, str]:
    """The chart installed (the session's `kiln run` stopped first) in a namespace of its own on the real
    node (restricted Pod Security), the operator's image from the local registry, the personas' roles
    under ``personas`` (`kiln run` made kiln-*). Returns the Helm and the namespace."""
    from tests.chart.conftest import CHART, Helm, _tool

    operator.stop()
    operator.remove_webhooks()
    helm = Helm(_tool("helm", "hack/helm/build.sh"), helm_home, kube.kubeconfig)
    ns = make_namespace(kube, node="real")
    kube.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
                 "pod-security.kubernetes.io/enforce-version=latest")
    repo, tag = image.rsplit(":", 1)
    # Its webhooks resolve image digests: the local registry at the node's address (as pods reach it), the
    # tests' made-up registries not at all.
    pods_registry = (cluster.read_state() or {})["node"]["registryForPods"]
    helm.run("install", release, str(CHART), "--namespace", ns, "--skip-crds", "--set", f"image.repository={repo}",
             "--set", f"image.tag={tag}", "--set", f"rbac.personas.prefix={personas}",
             "--set-json", f"registration.skipDigestResolution={json.dumps(FAKE_REGISTRIES.split(','))}",
             "--set-json", "registration.registryMirrors=" + json.dumps({"127.0.0.1:5001": f"http://{pods_registry}"}),
             "--wait", "--timeout", timeout)
    return helm, ns
