"""The chart's RBAC is enough for the operator, and no more: the real operator runs with the chart's
ServiceAccount token (outside the cluster, as kwok runs no container) through the core behaviours, and
`kubectl auth can-i` shows what the ServiceAccount cannot do."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kiln.admission.configuration import webhook_configurations
from tests.chart.conftest import CHART, Helm
from tests.conftest import make_namespace
from tests.integration.test_deployments import deployment, wait_ready
from tests.integration.test_registration import register
from tests.integration.test_workloads import (
    artifact,
    container,
    create,
    events,
    get,
    patch,
    pods,
    wait_running,
    workload,
)
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster


@pytest.fixture
def chart_rbac(kube: Kube, crds: None, namespace: str, cluster_helm: Helm) -> Iterator[str]:
    """The chart installed without webhooks (its pod is simulated): its ServiceAccount and ClusterRole.
    Yields the ServiceAccount's user name."""
    cluster_helm.run("install", "kiln", str(CHART), "--namespace", namespace, "--skip-crds",
                     "--set", "webhooks.enabled=false", "--set", f"rbac.personas.prefix={namespace}",
                     "--wait", "--timeout", "120s")
    try:
        yield f"system:serviceaccount:{namespace}:kiln"
    finally:
        cluster_helm.run("uninstall", "kiln", "--namespace", namespace, "--wait", "--timeout", "120s")


def _token_kubeconfig(kube: Kube, namespace: str, path: Path) -> Path:
    """A kubeconfig for the chart's ServiceAccount: the admin's server and CA, a bound token."""
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c["context"] for c in admin["contexts"] if c["name"] == admin.get("current-context")) \
        if admin.get("current-context") else admin["contexts"][0]["context"]
    cluster = dict(next(c["cluster"] for c in admin["clusters"] if c["name"] == context["cluster"]))
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority"))
        if not ca.is_absolute():
            ca = kube.kubeconfig.parent / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    token = kube.kubectl("create", "token", "kiln", "-n", namespace, "--duration=1h").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kiln",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "kiln", "user": {"token": token}}],
        "contexts": [{"name": "kiln", "context": {"cluster": "local", "user": "kiln", "namespace": namespace}}],
    }))
    return path


@pytest.fixture
def sa_operator(kube: Kube, operator: Operator, chart_rbac: str, namespace: str,
                tmp_path: Path) -> Iterator[Operator]:
    """The operator with the chart's ServiceAccount only, alone (the session's operator is paused: two
    standalone operators would both act), with its webhooks registered for this namespace."""
    kubeconfig = _token_kubeconfig(kube, namespace, tmp_path / "kiln-sa.kubeconfig")
    workdir = tmp_path / "operator"
    workdir.mkdir()
    # With leader election, as the chart runs it: the Lease is the chart's, in the release namespace.
    op = Operator(kube, workdir, kubeconfig=kubeconfig, args=(
        "--no-register-webhooks", "--leader-election", "--lease-namespace", namespace, "--lease-name", "kiln-leader"))
    operator.stop()
    name = f"kiln-rbac-{namespace}"
    try:
        op.start()
        ca = base64.b64encode((workdir / "webhook-certs" / "ca.crt").read_bytes()).decode()
        validating, mutating = webhook_configurations(
            {"url": f"https://127.0.0.1:{op.webhook_port}", "caBundle": ca}, name)
        for cfg in (validating, mutating):
            for w in cfg["webhooks"]:
                w["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        kube.admission.create_validating_webhook_configuration(validating)
        kube.admission.create_mutating_webhook_configuration(mutating)
        yield op
    finally:
        # A leftover fail-closed webhook would block the next run: removed before anything else.
        kube.delete_webhook_configurations(name)
        op.stop()
        operator.start()


def _denied(log: str) -> list[str]:
    """The operator's log lines that report an RBAC denial (not other 403s, such as writes into a
    terminating namespace left by another test)."""
    return [line for line in log.splitlines()
            if re.search(r'User "[^"]+" cannot \w+ resource|not enough permissions|Unauthorized', line, re.I)]


def test_the_operator_works_with_the_charts_rbac(kube: Kube, sa_operator: Operator, namespace: str) -> None:
    try:
        _core_behaviours(kube, namespace)
    except AssertionError as e:
        denied = _denied(sa_operator.log.read_text())
        if denied:  # the likely cause, rather than a time-out
            raise AssertionError(f"{e}\nRBAC denials in the operator's log:\n" + "\n".join(denied[:20])) from e
        raise
    log = sa_operator.log.read_text()
    assert not _denied(log), "\n".join(_denied(log)[:20])
    lease = kube.kubectl_json("-n", namespace, "get", "lease", "kiln-leader")
    assert lease["spec"]["holderIdentity"], "the operator holds the chart's Lease"


def _core_behaviours(kube: Kube, ns: str) -> None:
    # A Workload with an inline artifact: the Draft Artifact, pods, a Service, Events.
    create(kube, ns, workload("my-app", inline=[container()]))
    first = wait_running(kube, ns, "my-app")
    assert get(kube, ns, "artifacts", "my-app")["spec"]["lifecycle"] == "Draft"
    assert kube.exists(kube.core.read_namespaced_service, "my-app-dev", ns)
    kube.wait(lambda: {"ArtifactCreated", "Created"} <= set(events(kube, ns, "my-app")), what="Events posted")

    # A draft change restarts it onto the new spec.
    patch(kube, ns, "artifacts", "my-app", {"spec": {"containers": [container("registry.example/app:2")]}})
    before = first["status"]["artifact"]["specDigest"]
    kube.wait(lambda: get(kube, ns, "workloads", "my-app")["status"]["artifact"]["specDigest"] != before,
              what="workload restarted onto the new draft")
    wait_running(kube, ns, "my-app")
    assert pods(kube, ns, "my-app")[0].spec.containers[0].image == "registry.example/app:2"

    # Registering records who did it (the mutating webhook, then the status).
    assert register(kube, ns, "my-app")["status"]["registeredBy"] == "kiln-admin"

    # A governed Deployment promoted from the Workload (the webhook reads the Workload with the
    # operator's credentials), scaled (an update of the apps/v1 Deployment), its PDB removed.
    created = create(kube, ns, deployment("prod", workload_ref="my-app", podDisruptionBudget={"minAvailable": 1}))
    assert created["spec"]["artifactRef"] == {"name": "my-app"}
    wait_ready(kube, ns, "prod")
    assert kube.apps.read_namespaced_deployment("prod", ns).spec.template.spec.containers[0].image \
        == "registry.example/app:2"
    assert kube.policy.read_namespaced_pod_disruption_budget("prod", ns).spec.min_available == 1
    patch(kube, ns, "deployments", "prod", {"spec": {"replicas": 2, "podDisruptionBudget": None}})
    wait_ready(kube, ns, "prod", replicas=2)
    kube.wait(lambda: not kube.exists(kube.policy.read_namespaced_pod_disruption_budget, "prod", ns),
              what="PodDisruptionBudget removed")

    # Stopping deletes the pods and the Service.
    patch(kube, ns, "workloads", "my-app", {"spec": {"state": "Stopped"}})
    kube.wait(lambda: not pods(kube, ns, "my-app") and not kube.exists(kube.core.read_namespaced_service,
                                                                       "my-app-dev", ns),
              what="pods and Service deleted")
    # An artifact a Workload waits for (created by someone else) starts it.
    create(kube, ns, workload("later", ref="later"))
    create(kube, ns, artifact("later", [container()]))
    wait_running(kube, ns, "later")


CANNOT: list[tuple[str, ...]] = [
    ("get", "secrets"),
    ("list", "secrets", "--all-namespaces"),
    ("watch", "secrets", "-n", "kube-system"),
    ("get", "configmaps"),
    ("*", "*"),
    ("escalate", "clusterroles"),
    ("bind", "clusterroles"),
    ("create", "clusterrolebindings"),
    ("impersonate", "users"),
    ("create", "serviceaccounts", "--subresource=token"),
    ("create", "pods", "--subresource=exec"),
    ("create", "pods", "--subresource=eviction"),
    ("delete", "namespaces"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("delete", "artifacts.kiln.dev"),
    ("update", "workloads.kiln.dev"),
    ("delete", "deployments.apps"),
]
CAN: list[tuple[str, ...]] = [
    ("create", "pods"),
    ("patch", "workloads.kiln.dev", "--subresource=status"),
    ("create", "artifacts.kiln.dev"),
    ("update", "deployments.apps"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "events"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
    ("get", "leases.coordination.k8s.io/kiln-leader"),
    ("update", "leases.coordination.k8s.io/kiln-leader"),
    ("create", "leases.coordination.k8s.io"),
]
LEASES_CANNOT: list[tuple[str, ...]] = [
    ("update", "leases.coordination.k8s.io/kube-controller-manager"),
    ("delete", "leases.coordination.k8s.io/kiln-leader"),
    ("list", "leases.coordination.k8s.io"),
]


def test_auth_can_i(kube: Kube, chart_rbac: str, namespace: str) -> None:
    wrong = []
    for allowed, check in [(False, c) for c in CANNOT + LEASES_CANNOT] + [(True, c) for c in CAN]:
        r = kube.kubectl("auth", "can-i", *check, f"--as={chart_rbac}", "-n", namespace, check=False)
        if r.stdout.strip() != ("yes" if allowed else "no"):
            wrong.append(f"can-i {' '.join(check)}: {r.stdout.strip()} {r.stderr.strip()}")
    assert not wrong, "\n".join(wrong)


@pytest.fixture
def namespaced_install(kube: Kube, crds: None, namespace: str, cluster_helm: Helm) -> Iterator[tuple[str, str, str]]:
    """The chart installed with watchNamespaces=[a]: (its ServiceAccount's user name, a, b), b being
    another namespace."""
    a, b = make_namespace(kube), make_namespace(kube)
    cluster_helm.run("install", "kiln", str(CHART), "--namespace", namespace, "--skip-crds",
                     "--set", "webhooks.enabled=false", "--set", f"watchNamespaces={{{a}}}",
                     "--set", "rbac.personas.create=false",
                     "--wait", "--timeout", "120s")
    try:
        yield f"system:serviceaccount:{namespace}:kiln", a, b
    finally:
        cluster_helm.run("uninstall", "kiln", "--namespace", namespace, "--wait", "--timeout", "120s")
        for ns in (a, b):
            kube.core.delete_namespace(ns, propagation_policy="Background")


def test_namespaced_install_acts_in_its_namespaces_only(kube: Kube, namespaced_install: tuple[str, str, str],
                                                        namespace: str) -> None:
    user, a, b = namespaced_install
    expected: list[tuple[bool, tuple[str, ...]]] = [
        (True, ("create", "pods", "-n", a)),
        (True, ("delete", "pods", "-n", a)),
        (True, ("watch", "services", "-n", a)),
        (True, ("create", "events", "-n", a)),
        (True, ("update", "deployments.apps", "-n", a)),
        (True, ("create", "poddisruptionbudgets.policy", "-n", a)),
        (True, ("patch", "workloads.kiln.dev", "--subresource=status", "-n", a)),
        (True, ("reconcile", "deployments.kiln.dev", "-n", a)),
        (True, ("watch", "customresourcedefinitions.apiextensions.k8s.io")),
        (True, ("watch", "namespaces")),
        (True, ("create", "subjectaccessreviews.authorization.k8s.io")),
        (True, ("watch", "approvals.kiln.dev", "-n", a)),
        (False, ("watch", "approvals.kiln.dev", "-n", b)),
        (True, ("update", "leases.coordination.k8s.io/kiln-leader", "-n", namespace)),
        (False, ("create", "pods", "-n", b)),
        (False, ("create", "pods", "-n", namespace)),
        (False, ("list", "pods", "--all-namespaces")),
        (False, ("watch", "services", "-n", b)),
        (False, ("create", "events", "-n", b)),
        (False, ("update", "deployments.apps", "-n", b)),
        (False, ("create", "poddisruptionbudgets.policy", "-n", b)),
        (False, ("patch", "workloads.kiln.dev", "--subresource=status", "-n", b)),
        (False, ("reconcile", "deployments.kiln.dev", "-n", b)),
        (False, ("list", "artifacts.kiln.dev", "--all-namespaces")),
        (False, ("update", "leases.coordination.k8s.io/kiln-leader", "-n", a)),
    ]
    wrong = []
    for allowed, check in expected:
        r = kube.kubectl("auth", "can-i", *check, f"--as={user}", check=False)
        if r.stdout.strip() != ("yes" if allowed else "no"):
            wrong.append(f"can-i {' '.join(check)}: {r.stdout.strip()} {r.stderr.strip()}")
    assert not wrong, "\n".join(wrong)
