"""The user's whole tutorial (steps 1 to 4), driven with kubectl alone, as in examples/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_iterate_then_deploy(kube: Kube, operator: Operator, namespace: str) -> None:
    def k(*args: str, check: bool = True) -> str:
        r = kube.kubectl("-n", namespace, *args, check=check)
        return r.stdout if check else r.stderr

    def jp(resource: str, path: str) -> str:
        return k("get", resource, "-o", f"jsonpath={path}")

    def wait(resource: str, path: str, value: str) -> None:
        k("wait", f"--for=jsonpath={path}={value}", resource, "--timeout=60s")

    def pods() -> set[str]:
        return set(k("get", "pods", "-l", "kiln.dev/workload=my-app", "-o", "name").split())

    # Step 1: a workload with an inline artifact creates a Draft artifact and runs.
    k("apply", "-f", str(EXAMPLES / "01-workload-with-inline-artifact.yaml"))
    wait("workload.kiln.dev/my-app", "{.status.state}", "Running")
    assert jp("artifact.kiln.dev/my-app", "{.spec.lifecycle}") == "Draft"
    step1 = pods()
    assert len(step1) == 1

    # 2a: a metadata patch restarts nothing.
    k("patch", "artifact.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"description":"v2"}}')
    wait("artifact.kiln.dev/my-app", "{.status.observedGeneration}", "2")
    assert pods() == step1

    # 2b: replacing the whole draft restarts the workload onto the new spec.
    k("replace", "-f", str(EXAMPLES / "02b-artifact-my-app.yaml"))
    wait("artifact.kiln.dev/my-app", "{.status.observedGeneration}", "3")
    digest = jp("artifact.kiln.dev/my-app", "{.status.specDigest}")
    wait("workload.kiln.dev/my-app", "{.status.artifact.specDigest}", digest)
    wait("workload.kiln.dev/my-app", "{.status.state}", "Running")
    step2 = pods()
    assert step2 and step2.isdisjoint(step1)
    image = jp("pods", "{.items[0].spec.containers[0].image}")
    assert image == "registry.example.com/my-app:2.0"

    # 2c: stop, then start.
    k("patch", "workload.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"state":"Stopped"}}')
    wait("workload.kiln.dev/my-app", '{.status.conditions[?(@.type=="Ready")].reason}', "Stopped")
    assert pods() == set()
    k("patch", "workload.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"state":"Running"}}')
    wait("workload.kiln.dev/my-app", "{.status.state}", "Running")
    running = pods()
    assert len(running) == 1

    # Step 3: register; the spec is locked, nothing restarts.
    k("patch", "artifact.kiln.dev", "my-app", "--type", "merge", "-p", '{"spec":{"lifecycle":"Registered"}}')
    wait("artifact.kiln.dev/my-app", "{.status.lifecycle}", "Registered")
    assert jp("artifact.kiln.dev/my-app", "{.status.specDigest}") == digest
    assert jp("artifact.kiln.dev/my-app", "{.status.registeredBy}") == "kiln-admin"
    err = k("replace", "-f", str(EXAMPLES / "03-artifact-my-app-v3.yaml"), check=False)
    assert "Registered" in err and "my-app" in err, err
    assert pods() == running

    # Step 4: promote the workload to a governed Deployment.
    k("apply", "-f", str(EXAMPLES / "04-deployment.yaml"))
    wait("deployment.kiln.dev/my-app", '{.status.conditions[?(@.type=="Ready")].status}', "True")
    dep: dict[str, Any] = json.loads(k("get", "deployment.kiln.dev/my-app", "-o", "json"))
    assert dep["spec"]["artifactRef"] == {"name": "my-app"}
    assert dep["status"]["artifact"]["specDigest"] == digest
    assert dep["status"]["readyReplicas"] == 2
    [created] = dep["status"]["history"]
    assert (created["action"], created["actor"], created["artifact"]) == ("Created", "kiln-admin", "my-app")
    table = k("get", "deployments.kiln.dev")
    assert "High" in table and "True" in table, table
    assert jp("deployment.apps/my-app", "{.status.readyReplicas}") == "2"
