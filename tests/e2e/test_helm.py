"""The way users install Kiln: `helm install` of the chart with the operator image built from the
project's Dockerfile, running as a pod on the real node. The API server calls its webhooks through
their Service with the chart's certificate; the tutorial passes against it; deleting the operator's pod
in the middle of a restart storm converges; `helm upgrade` and `helm uninstall` leave users' objects be.

The session's own operator (`kiln run` on this host) is stopped meanwhile: two operators must not
reconcile the same objects."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.conftest import CHART, Helm
from tests.conftest import make_namespace
from tests.e2e.conftest import answer, install_chart, service_url
from tests.e2e.tutorial import FEATURES, run_tutorial
from tests.integration.test_workloads import artifact, container, create, get, pods, workload
from tests.kube import Kube, Operator, webhooks_effective

pytestmark = pytest.mark.cluster
RELEASE = "kiln"
PERSONAS = "kiln-helm"
STORM = 12  # Workloads of two pods each, restarted at once


@pytest.fixture(scope="module")
def installed(kube: Kube, operator: Operator, registry_images: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Helm, str]]:
    """The chart installed in a namespace of its own (restricted Pod Security), the operator's image from
    the local registry; uninstalled at the end, and the session's operator back."""
    helm, ns = install_chart(kube, operator, registry_images["operator"], tmp_path_factory.mktemp("helm-home"),
                             RELEASE, PERSONAS, timeout="180s")
    try:
        kube.wait(lambda: webhooks_effective(kube), what="the API server to call the in-cluster webhooks", timeout=60)
        yield helm, ns
    finally:
        helm.run("uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "120s", check=False)
        kube.core.delete_namespace(ns, propagation_policy="Background")
        operator.start()


def operator_pod(kube: Kube, ns: str) -> Any:
    """The operator pod that reconciles: the one named in its Lease (``<pod>_<suffix>``), if it lives."""
    lease = kube.coordination.read_namespaced_lease(f"{RELEASE}-leader", ns) if kube.exists(
        kube.coordination.read_namespaced_lease, f"{RELEASE}-leader", ns) else None
    holder = (lease.spec.holder_identity or "").rsplit("_", 1)[0] if lease else ""
    live = [p for p in kube.core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
            if not p.metadata.deletion_timestamp and p.metadata.name == holder]
    return live[0] if live else None


def test_the_operator_runs_as_a_pod_on_the_real_node(kube: Kube, installed: tuple[Helm, str],
                                                      registry_images: dict[str, str]) -> None:
    _, ns = installed
    pod = operator_pod(kube, ns)
    assert pod.spec.node_name == "kiln-real"
    assert pod.spec.containers[0].image == registry_images["operator"]
    [status] = pod.status.container_statuses
    assert status.ready and status.started and status.image_id.startswith("127.0.0.1:5001/kiln/operator@sha256:")
    # Its webhooks are called through their Service, with the chart's certificate.
    for cfg in (kube.admission.read_validating_webhook_configuration(f"{ns}-{RELEASE}"),
                kube.admission.read_mutating_webhook_configuration(f"{ns}-{RELEASE}")):
        for hook in cfg.webhooks:
            assert hook.client_config.url is None
            assert (hook.client_config.service.namespace, hook.client_config.service.port) == (ns, 443)


def test_tutorial_against_the_installed_operator(kube: Kube, installed: tuple[Helm, str],
                                                 real_namespace: str) -> None:
    run_tutorial(kube, real_namespace, real=True, approver_role=f"{PERSONAS}-approver")

    # The chart's metrics Service reaches both processes of each replica: the leader's reconciles of the
    # tutorial, and the registrations the replicas' webhook servers answered, are counted (read from this
    # host, as Prometheus would).
    _, ns = installed
    svc = kube.core.read_namespaced_service(f"{RELEASE}-metrics", ns)
    assert {p.target_port for p in svc.spec.ports} == {"metrics", "webhook-metrics"}
    leader = operator_pod(kube, ns)
    registrations = 0.0
    for pod in kube.core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={RELEASE}").items:
        ports = {p.name: p.container_port for p in pod.spec.containers[0].ports}
        text = {name: urllib.request.urlopen(f"http://{pod.status.pod_ip}:{ports[name]}/metrics", timeout=10).read()
                .decode() for name in ("metrics", "webhook-metrics")}
        leads = pod.metadata.name == leader.metadata.name
        assert f"kiln_leader {1.0 if leads else 0.0}" in text["metrics"]
        if leads:
            assert re.search(r'controller_runtime_reconcile_total\{controller="workload",result="success"\} [1-9]',
                             text["metrics"])
        found = re.search(r'controller_runtime_webhook_requests_total\{code="200",webhook="record-registration"\} '
                          r"([0-9.]+)", text["webhook-metrics"])
        registrations += float(found.group(1)) if found else 0.0
    assert registrations >= 2  # my-app (step 3) and my-app-2 (step 5)


def test_operator_pod_deleted_in_a_restart_storm_converges(kube: Kube, installed: tuple[Helm, str]) -> None:
    """Every Workload ends on the new spec with exactly its pods: none duplicated, none left over."""
    _, release_ns = installed
    ns = make_namespace(kube, node="kwok")  # many pods: simulated ones
    try:
        create(kube, ns, artifact("storm", [container(env=[{"name": "ROUND", "value": "1"}])]))
        for i in range(STORM):
            create(kube, ns, workload(f"w{i}", ref="storm", replicas=2))
        first = settled(kube, ns)
        kube.custom.patch_namespaced_custom_object("kiln.dev", "v1alpha1", ns, "artifacts", "storm", {
            "spec": {"containers": [container(env=[{"name": "ROUND", "value": "2"}])]}})
        kube.wait(lambda: any(p.metadata.labels["kiln.dev/revision"] not in first
                              for p in kube.core.list_namespaced_pod(ns).items),
                  what="the restart storm to begin", timeout=60)
        old = operator_pod(kube, release_ns)
        kube.kubectl("-n", release_ns, "delete", "pod", old.metadata.name, "--wait=false")
        kube.wait(lambda: (p := operator_pod(kube, release_ns)) and p.metadata.uid != old.metadata.uid
                  and p.status.container_statuses and p.status.container_statuses[0].ready,
                  what="a new operator pod Ready", timeout=120)
        second = settled(kube, ns, timeout=180)
        assert second.isdisjoint(first), (first, second)
    finally:
        kube.core.delete_namespace(ns, propagation_policy="Background")


def settled(kube: Kube, ns: str, timeout: float = 90) -> set[str]:
    """Wait until every Workload runs the artifact's current digest with exactly its two pods, of one
    revision, and the namespace holds no other pod; returns the revisions."""
    def check() -> set[str] | None:
        digest = get(kube, ns, "artifacts", "storm").get("status", {}).get("specDigest")
        revisions = set()
        for i in range(STORM):
            st = get(kube, ns, "workloads", f"w{i}").get("status") or {}
            ps = pods(kube, ns, f"w{i}")
            if (st.get("state") != "Running" or st.get("artifact", {}).get("specDigest") != digest
                    or len(ps) != 2 or len({p.metadata.labels["kiln.dev/revision"] for p in ps}) != 1):
                return None
            revisions |= {p.metadata.labels["kiln.dev/revision"] for p in ps}
        everything = kube.core.list_namespaced_pod(ns).items
        return revisions if len(everything) == 2 * STORM else None
    return kube.wait(check, what=f"{STORM} workloads settled with 2 pods each and nothing else", timeout=timeout,
                     interval=0.5)


def test_upgrade_keeps_and_uninstall_leaves_users_objects(kube: Kube, installed: tuple[Helm, str],
                                                          real_namespace: str) -> None:
    helm, release_ns = installed
    ns = real_namespace
    create(kube, ns, artifact("model", [container("127.0.0.1:5001/kiln/scorer:v1",
                                                  readinessProbe={"httpGet": {"path": "/ready", "port": "http"},
                                                                  "periodSeconds": 1})]))
    kube.custom.patch_namespaced_custom_object("kiln.dev", "v1alpha1", ns, "artifacts", "model",
                                               {"spec": {"lifecycle": "Registered"}})
    kube.wait(lambda: get(kube, ns, "artifacts", "model").get("status", {}).get("lifecycle") == "Registered",
              what="registered", timeout=60)
    create(kube, ns, {"apiVersion": "kiln.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": "model"},
                      "spec": {"artifactRef": {"name": "model"}, "replicas": 1}})
    kube.wait(lambda: (Kube.condition(get(kube, ns, "deployments", "model"), "Ready") or {}).get("status") == "True",
              what="the governed Deployment Ready", timeout=120)
    url, v1 = service_url(kube, ns, "model", "/predict"), {"model": "scorer", "version": "v1", "score": 3.0}
    kube.wait(lambda: answer(url, FEATURES) == v1, what=f"{url} to answer", timeout=30)  # kube-proxy's sync
    before = {p.metadata.uid for p in kube.core.list_namespaced_pod(ns).items}

    helm.run("upgrade", RELEASE, str(CHART), "--namespace", release_ns, "--reuse-values", "--set", "workers=10",
             "--wait", "--timeout", "180s")
    kube.wait(lambda: webhooks_effective(kube), what="the webhooks after the upgrade", timeout=60)
    assert {p.metadata.uid for p in kube.core.list_namespaced_pod(ns).items} == before
    assert get(kube, ns, "deployments", "model")["status"]["history"][0]["action"] == "Created"

    helm.run("uninstall", RELEASE, "--namespace", release_ns, "--wait", "--timeout", "120s")
    assert not kube.exists(kube.admission.read_validating_webhook_configuration, f"{release_ns}-{RELEASE}")
    assert not kube.exists(kube.admission.read_mutating_webhook_configuration, f"{release_ns}-{RELEASE}")
    for plural in ("artifacts", "deployments"):
        assert get(kube, ns, plural, "model")["metadata"]["name"] == "model"
    assert {p.metadata.uid for p in kube.core.list_namespaced_pod(ns).items} == before
    assert answer(url, FEATURES) == v1, "production keeps running"
