"""Smoke tests proving the control plane is real: scheduling, controllers, GC, namespaces, webhooks."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.kube import Kube

pytestmark = pytest.mark.cluster

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "smoke"},
    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
}


def _pod_ready(kube: Kube, name: str, ns: str) -> Any:
    pod = kube.core.read_namespaced_pod(name, ns)
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return pod if ready and pod.status.phase == "Running" else None


def test_pod_is_scheduled_and_becomes_ready(kube: Kube, namespace: str) -> None:
    kube.core.create_namespaced_pod(namespace, POD)
    pod = kube.wait(lambda: _pod_ready(kube, "smoke", namespace), what="pod smoke Ready")
    assert pod.spec.node_name == "kwok-node-0"
    assert pod.status.pod_ip


def test_pod_applied_with_kubectl_reaches_running(kube: Kube, namespace: str) -> None:
    import json

    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(POD))
    kube.wait(lambda: kube.kubectl("get", "pod", "smoke", "-n", namespace, "-o",
                                   "jsonpath={.status.phase}").stdout == "Running",
              what="kubectl: pod smoke Running")


def test_deployment_produces_replicaset_and_ready_pods(kube: Kube, namespace: str) -> None:
    labels = {"app": "smoke"}
    kube.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "smoke"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}},
    })
    kube.wait(lambda: (kube.apps.read_namespaced_deployment("smoke", namespace).status.ready_replicas or 0) == 2,
              what="deployment smoke 2/2 ready")
    rs = kube.apps.list_namespaced_replica_set(namespace).items
    assert len(rs) == 1
    assert rs[0].metadata.owner_references[0].name == "smoke"
    pods = kube.core.list_namespaced_pod(namespace, label_selector="app=smoke").items
    assert len(pods) == 2
    assert all(p.metadata.owner_references[0].name == rs[0].metadata.name for p in pods)


def test_deleting_an_owner_garbage_collects_its_children(kube: Kube, namespace: str) -> None:
    owner = kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    kube.core.delete_namespaced_config_map("owner", namespace)
    kube.wait(lambda: not kube.exists(kube.core.read_namespaced_config_map, "child", namespace),
              what="child configmap garbage-collected")


def test_namespace_deletion_completes(kube: Kube) -> None:
    name = f"t-del-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace({"metadata": {"name": name}})
    kube.core.create_namespaced_config_map(name, {"metadata": {"name": "content"}})
    kube.core.delete_namespace(name)
    kube.wait(lambda: not kube.exists(kube.core.read_namespace, name), what=f"namespace {name} gone")


def test_kopf_validating_webhook_over_tls_rejects(kube: Kube, namespace: str, tmp_path: Any) -> None:
    """A kopf operator serving a validating webhook over TLS on 127.0.0.1 rejects a request."""
    import kopf
    import trustme
    from kopf.testing import KopfRunner

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    managed = f"smoke-{uuid.uuid4().hex[:6]}.kiln.dev"

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = kopf.WebhookServer(
            addr="127.0.0.1", host="127.0.0.1", certfile=str(tmp_path / "cert.pem"),
            pkeyfile=str(tmp_path / "key.pem"), cafile=str(tmp_path / "ca.pem"))
        settings.admission.managed = managed
        settings.watching.server_timeout = 10

    @kopf.on.validate("", "v1", "configmaps", id="smoke", registry=registry, operations=["CREATE"],
                      labels={"kiln.dev/smoke": "reject"})
    def reject(**_: Any) -> None:
        raise kopf.AdmissionError("rejected by the smoke webhook", code=400)

    body = {"metadata": {"name": "rejected", "labels": {"kiln.dev/smoke": "reject"}}}
    try:
        os.environ["KUBECONFIG"] = str(kube.kubeconfig)  # what kopf's kubeconfig login reads
        with KopfRunner(["run", "--standalone", "--namespace", namespace], registry=registry,
                        timeout=60) as runner:
            def attempt() -> ApiException | None:
                try:
                    kube.core.create_namespaced_config_map(namespace, body, dry_run="All")
                except ApiException as e:
                    return e
                return None

            err = kube.wait(attempt, what="the webhook to reject a configmap")
            assert err.status == 400
            assert "rejected by the smoke webhook" in err.body
            # The webhook is scoped by its label selector: others pass.
            kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "allowed"}})
        assert runner.exception is None, runner.output
    finally:
        # A leftover failurePolicy=Fail webhook configuration would block the next run.
        kube.delete_webhook_configurations(managed)
    assert not kube.exists(kube.admission.read_validating_webhook_configuration, managed)
