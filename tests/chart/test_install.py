"""The chart against the real API server: server-side dry runs, and a real install, upgrade and uninstall.

The operator's pod is simulated by kwok (Running and Ready, nothing runs), so the installed webhook
configurations, two of which fail closed, are limited to the release's namespace: they never block
another test's writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.chart.conftest import CHART, Helm
from tests.kube import Kube

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("values", [
    [],
    ["--set", "webhooks.enabled=false", "--set", "watchNamespaces={default,kube-public}"],
    ["--set", "certManager.enabled=true"],
    ["--set", "certManager.enabled=true", "--set", "certManager.issuerRef.name=corp-ca",
     "--set", "certManager.issuerRef.kind=ClusterIssuer"],
], ids=["defaults", "no-webhooks", "cert-manager", "issuer-ref"])
def test_rendered_chart_is_accepted_by_the_api_server(kube: Kube, crds: None, cert_manager_crds: None,
                                                      namespace: str, helm: Helm, values: list[str]) -> None:
    manifests = helm.template("--include-crds", *values, namespace=namespace)
    r = kube.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=manifests)
    applied = r.stdout.splitlines()
    assert all(line.endswith("(server dry run)") for line in applied), r.stdout
    assert any(line.startswith("deployment.apps/kiln ") for line in applied), r.stdout


def _install_values(tmp_path: Path, namespace: str) -> Path:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"webhooks": {"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}))
    return values


def test_install_upgrade_uninstall(kube: Kube, crds: None, namespace: str, cluster_helm: Helm,
                                   tmp_path: Path) -> None:
    helm, release, cluster_name = cluster_helm, "kiln", f"{namespace}-kiln"
    # The pod must be admitted under the "restricted" Pod Security Standard.
    kube.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                 "pod-security.kubernetes.io/enforce-version=latest")
    values = _install_values(tmp_path, namespace)
    # The personas' roles under a prefix of this install's own (a `kiln run` of the session made kiln-*).
    install = ["--namespace", namespace, "--skip-crds", "-f", str(values), "--set", f"rbac.personas.prefix={namespace}",
               "--wait", "--timeout", "120s"]
    helm.run("install", release, str(CHART), *install)
    try:
        dep = kube.apps.read_namespaced_deployment("kiln", namespace)
        assert dep.status.ready_replicas == 2 and dep.spec.strategy.type == "RollingUpdate"
        pods = kube.core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/instance=kiln").items
        assert [p.status.phase for p in pods] == ["Running", "Running"]
        assert {p.spec.service_account_name for p in pods} == {"kiln"}
        assert kube.policy.read_namespaced_pod_disruption_budget("kiln", namespace).spec.min_available == 1
        rbac = client.RbacAuthorizationV1Api(kube.api)
        assert rbac.read_namespaced_role("kiln-leader-election", namespace).rules[1].resource_names == ["kiln-leader"]

        secret = kube.core.read_namespaced_secret("kiln-webhook-tls", namespace)
        assert secret.type == "kubernetes.io/tls" and set(secret.data) == {"ca.crt", "tls.crt", "tls.key"}
        validating = kube.admission.read_validating_webhook_configuration(cluster_name)
        mutating = kube.admission.read_mutating_webhook_configuration(cluster_name)
        for cfg in (validating, mutating):
            for w in cfg.webhooks:
                assert w.client_config.ca_bundle == secret.data["ca.crt"], w.name
                assert (w.client_config.service.name, w.client_config.service.namespace) == ("kiln-webhook", namespace)
                assert w.namespace_selector.match_labels == {"kubernetes.io/metadata.name": namespace}
        assert kube.core.read_namespaced_service("kiln-webhook", namespace).spec.ports[0].port == 443
        role = client.RbacAuthorizationV1Api(kube.api).read_cluster_role(cluster_name)
        assert role.metadata.labels["app.kubernetes.io/instance"] == release

        # An upgrade keeps the certificate (lookup), so the caBundle stays valid and the pod is not restarted.
        generation = dep.metadata.generation
        helm.run("upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values", "--set", "workers=10",
                 "--wait", "--timeout", "120s")
        after = kube.core.read_namespaced_secret("kiln-webhook-tls", namespace)
        assert after.data == secret.data
        assert kube.admission.read_validating_webhook_configuration(cluster_name).webhooks[0].client_config.ca_bundle \
            == secret.data["ca.crt"]
        upgraded = kube.apps.read_namespaced_deployment("kiln", namespace)
        assert upgraded.metadata.generation == generation + 1  # the workers change only
        assert upgraded.spec.template.metadata.annotations["checksum/webhook-tls"] \
            == dep.spec.template.metadata.annotations["checksum/webhook-tls"]
        env = {e.name: e.value for e in upgraded.spec.template.spec.containers[0].env}
        assert env["KILN_WORKERS"] == "10"
    finally:
        helm.run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    assert not kube.exists(kube.admission.read_validating_webhook_configuration, cluster_name)
    assert not kube.exists(kube.admission.read_mutating_webhook_configuration, cluster_name)
    assert not kube.exists(kube.core.read_namespaced_secret, "kiln-webhook-tls", namespace)
    assert not kube.exists(client.RbacAuthorizationV1Api(kube.api).read_cluster_role, cluster_name)
    assert not kube.exists(kube.policy.read_namespaced_pod_disruption_budget, "kiln", namespace)
    assert kube.exists(kube.ext.read_custom_resource_definition, "workloads.kiln.dev"), "--skip-crds: untouched"
