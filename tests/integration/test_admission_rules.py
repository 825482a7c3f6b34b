"""Specs the Pod or Service API would refuse are refused at admission, naming the field, whoever asks
(here an ordinary user): they never reach the operator to loop on 422s, and cannot be registered and
promoted. Names that would not fit every child are refused too."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.integration.test_security import USER, editor  # noqa: F401 - the fixture
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
GOOD: dict[str, Any] = {"name": "app", "image": "registry.example/app:1",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}


def changed(**fields: Any) -> list[dict[str, Any]]:
    c = copy.deepcopy(GOOD)
    c.update(fields)
    return [c]


BAD = [
    ("env value and valueFrom", changed(env=[{"name": "A", "value": "x", "valueFrom": {
        "configMapKeyRef": {"name": "cm", "key": "k"}}}]), "value and valueFrom may not both be set"),
    ("valueFrom from two sources", changed(env=[{"name": "A", "valueFrom": {
        "configMapKeyRef": {"name": "cm", "key": "k"}, "fieldRef": {"fieldPath": "metadata.name"}}}]),
     "set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef"),
    ("a probe with two handlers", changed(readinessProbe={"httpGet": {"port": 8080}, "tcpSocket": {"port": 8080}}),
     "set exactly one of httpGet, tcpSocket, exec, grpc"),
    ("a probe with no handler", changed(livenessProbe={"periodSeconds": 5}),
     "set exactly one of httpGet, tcpSocket, exec, grpc"),
    ("a negative quantity", changed(resources={"requests": {"cpu": "-1"}}), "containers[0].resources.requests.cpu"),
    ("requests above limits", changed(resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
     "containers[0].resources: requests may not exceed limits"),
    ("a numeric port name", changed(ports=[{"name": "8080", "containerPort": 8080}]), "name must contain a letter"),
    ("one port name for two ports", changed(ports=[{"name": "http", "containerPort": 8080},
                                                   {"name": "http", "containerPort": 9090}]),
     "a port name may name one port only"),
    ("a liveness probe needing two successes",
     changed(livenessProbe={"httpGet": {"port": 8080}, "successThreshold": 2}),
     "livenessProbe.successThreshold must be 1"),
    ("whitespace in an image", changed(image="registry.example/app 1"), "containers[0].image"),
    ("a probe of another host", changed(readinessProbe={"httpGet": {"port": 80, "host": "169.254.169.254"}}),
     "host is not allowed"),
    ("a probe of another host by TCP", changed(livenessProbe={"tcpSocket": {"port": 22, "host": "10.0.0.1"}}),
     "host is not allowed"),
    ("a probe with a Host header", changed(readinessProbe={"httpGet": {"port": 80, "httpHeaders": [
        {"name": "Host", "value": "metadata.internal"}]}}), "a Host header is not allowed"),
]


@pytest.mark.parametrize(("containers", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_spec_the_pod_api_would_refuse_is_refused_at_admission(kube: Kube, operator: Operator, namespace: str,
                                                                 editor: str, containers: list[Any],  # noqa: F811
                                                                 message: str) -> None:
    for kind, spec in (("Artifact", {"containers": containers}),
                       ("Workload", {"artifact": {"containers": containers}})):
        body = {"apiVersion": "kiln.dev/v1alpha1", "kind": kind, "metadata": {"name": "bad"}, "spec": spec}
        r = kube.kubectl("--as", USER, "-n", namespace, "create", "-f", "-", input=json.dumps(body), check=False)
        assert r.returncode != 0 and message in r.stderr, f"{kind}: {r.stderr or r.stdout}"
    good = {"apiVersion": "kiln.dev/v1alpha1", "kind": "Artifact", "metadata": {"name": "good"},
            "spec": {"containers": [GOOD]}}
    r = kube.kubectl("--as", USER, "-n", namespace, "create", "-f", "-", input=json.dumps(good), check=False)
    assert r.returncode == 0, r.stderr


NAMES = [
    ("Workload", "web.v2", "metadata.name must be a DNS label of at most 59 characters"),
    ("Workload", "w" * 60, "metadata.name must be a DNS label of at most 59 characters"),
    ("Workload", "2fast", "metadata.name must be a DNS label of at most 59 characters"),
    ("Deployment", "payments-dev", "not ending in -dev"),
    ("Deployment", "api.v1", "metadata.name must be a DNS label of at most 63 characters"),
]


@pytest.mark.parametrize(("kind", "name", "message"), NAMES, ids=[f"{k}-{n[:12]}" for k, n, _ in NAMES])
def test_names_that_would_not_fit_every_child_are_refused(kube: Kube, operator: Operator, namespace: str,
                                                          editor: str, kind: str, name: str,  # noqa: F811
                                                          message: str) -> None:
    spec = {"artifactRef": {"name": "a"}}
    body = {"apiVersion": "kiln.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    r = kube.kubectl("--as", USER, "-n", namespace, "create", "-f", "-", input=json.dumps(body), check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr
