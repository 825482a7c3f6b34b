"""Test fixtures shared by all layers.

Integration tests need a Kubernetes API server. Set ``KILN_TEST_KUBECONFIG`` to the kubeconfig of an
existing cluster (a kind cluster on a laptop with Docker, say) to use it; otherwise the session
starts the local control plane (``kiln cluster up``), and stops it at the end if it started it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from kiln.admission.process import free_port
from kiln_dev import cluster
from tests.kube import Kube, Operator


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[Path]:
    existing = os.environ.get("KILN_TEST_KUBECONFIG")
    if existing:
        yield Path(existing)
        return
    paths = cluster.Paths(cluster.state_dir())
    was_running = cluster.read_state(paths) is not None and cluster.status(paths)["running"]
    kc = cluster.up(paths)
    try:
        yield kc
    finally:
        if not was_running and not os.environ.get("KILN_TEST_KEEP_CLUSTER"):
            cluster.down(paths)


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def kube(api: client.ApiClient, kubeconfig: Path) -> Kube:
    return Kube(api, kubeconfig)


# The local cluster's pods go to its real node unless their namespace picks the simulated one
# (the API server's PodNodeSelector admission plugin reads this annotation).
NODE_SELECTOR = "scheduler.alpha.kubernetes.io/node-selector"


def make_namespace(kube: Kube, node: str = "kwok") -> str:
    """A fresh namespace whose pods run on the simulated node (kwok) or the real one, with its default
    ServiceAccount in place."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace({"metadata": {"name": name, "labels": {"kiln.dev/test": "true"},
                                             "annotations": {NODE_SELECTOR: f"kiln.dev/node={node}"}}})
    kube.wait(lambda: kube.exists(kube.core.read_namespaced_service_account, "default", name),
              what=f"serviceaccount {name}/default")
    return name


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace per test, on the simulated node; deleted afterwards."""
    name = make_namespace(kube)
    yield name
    if kube.exists(kube.core.read_namespace, name):  # a test may have deleted it
        kube.core.delete_namespace(name, propagation_policy="Background")


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def crds(kube: Kube) -> None:
    """Kiln's CRDs, applied with server-side apply and Established."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/artifacts.kiln.dev",
                 "crd/workloads.kiln.dev", "crd/deployments.kiln.dev", "crd/approvals.kiln.dev",
                 "crd/approvalpolicies.kiln.dev")


@pytest.fixture(scope="session")
def operator(kube: Kube, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The real operator (`kiln run`) in a subprocess, with its webhooks over TLS on 127.0.0.1, and the
    metrics endpoints of both its processes on 127.0.0.1 (tests/integration/test_metrics.py scrapes them)."""
    op = Operator(kube, tmp_path_factory.mktemp("operator"), args=(
        "--metrics-port", str(free_port()), "--webhook-metrics-port", str(free_port())))
    op.start()
    try:
        yield op
    finally:
        op.stop()
        op.remove_webhooks()
