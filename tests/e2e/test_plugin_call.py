"""`kubectl kiln call` on the real node: the example model server (examples/scorer) answered through
`kubectl port-forward`, for a Workload (Service <name>-dev) and for the governed Deployment promoted from
it (Service <name>), and the port-forward stopped afterwards. Then the seed's whole tutorial with
`kubectl kiln` verbs only, the model called at each step."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_plugin import plugin, run_plugin_tutorial, wait_for
from tests.integration.test_workloads import create, wait_running, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
FEATURES = '{"features": [1, 2, 3]}'  # v1 scores 0.5 * 6, v2 2.0 * 6
SCORES = {"v1": 3.0, "v2": 12.0}


def port_forwards(namespace: str) -> list[str]:
    """The command lines of the kubectl port-forwards running into this namespace."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"port-forward" in cmd and f"--namespace={namespace}".encode() in cmd:
            out.append(" ".join(c.decode() for c in cmd))
    return out


def test_call_a_workload_and_its_deployment(kube: Kube, operator: Operator, real_namespace: str,
                                            registry_images: dict[str, str]) -> None:
    ns = real_namespace
    scorer = {"name": "app", "image": registry_images["scorer:v1"],
              "ports": [{"name": "http", "containerPort": 8080}],
              "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}}
    create(kube, ns, workload("my-app", inline=[scorer]))
    wait_running(kube, ns, "my-app", timeout=120)

    r = plugin(kube, "-n", ns, "call", "workload", "my-app", "--path", "/predict", "--data", FEATURES)
    assert json.loads(r.stdout) == {"model": "scorer", "version": "v1", "score": 3.0}, r.stderr
    assert not port_forwards(ns), "the port-forward outlived the call"
    r = plugin(kube, "-n", ns, "call", "workload", "my-app", "--path", "/ready")  # GET
    assert r.returncode == 0 and r.stdout.strip()
    # The body from stdin (@-), the Service's port named.
    r = plugin(kube, "-n", ns, "call", "kwl/my-app", "--path", "predict", "--port", "8080", "--data", "@-",
               input='{"features": [4]}')
    assert json.loads(r.stdout)["score"] == 2.0

    # An HTTP error: the answer printed, exit 1.
    r = plugin(kube, "-n", ns, "call", "workload", "my-app", "--path", "/nowhere", check=False)
    assert r.returncode == 1 and "no route /nowhere" in r.stdout and "HTTP 404" in r.stderr, (r.stdout, r.stderr)
    # Not JSON: refused before anything is sent.
    r = plugin(kube, "-n", ns, "call", "workload", "my-app", "--data", "{nope", check=False)
    assert r.returncode == 1 and "not JSON" in r.stderr
    # No such workload: the API server's message.
    r = plugin(kube, "-n", ns, "call", "workload", "nobody", check=False)
    assert r.returncode == 1 and 'services "nobody-dev" not found' in r.stderr, r.stderr

    # Registered and promoted (Low: no approval needed), the governed Deployment answers too.
    plugin(kube, "-n", ns, "register", "artifact", "my-app")
    wait_for(kube, ns, "artifacts", "my-app", lambda a: (a.get("status") or {}).get("lifecycle") == "Registered",
             "registered")
    plugin(kube, "-n", ns, "promote", "workload", "my-app", "--name", "my-app-prod", "--importance", "Low")
    wait_for(kube, ns, "deployments", "my-app-prod",
             lambda d: (d.get("status") or {}).get("readyReplicas") == 1
             and (Kube.condition(d, "Ready") or {}).get("status") == "True", "my-app-prod ready", timeout=120)
    r = plugin(kube, "-n", ns, "call", "deployment", "my-app-prod", "--path", "/predict", "--data", FEATURES)
    assert json.loads(r.stdout) == {"model": "scorer", "version": "v1", "score": 3.0}, r.stderr
    assert not port_forwards(ns)


def test_the_seed_tutorial_with_plugin_verbs_only_calling_the_model(
        kube: Kube, operator: Operator, real_namespace: str, registry_images: dict[str, str]) -> None:
    """create workload, update artifact (2a, 2b), stop, start, register, promote --importance High, approve
    --as alice, history, get: on the real node, `kubectl kiln call` asks the model at each step."""
    ns = real_namespace

    def call(kiln: Callable[..., subprocess.CompletedProcess[str]], kind: str, name: str, version: str) -> None:
        expected = {"model": "scorer", "version": version, "score": SCORES[version]}

        def answers() -> bool:  # a pod that is leaving, or not yet behind the Service, may answer first
            r = kiln("call", kind, name, "--path", "/predict", "--data", FEATURES, check=False)
            try:
                return r.returncode == 0 and json.loads(r.stdout) == expected
            except ValueError:
                return False

        kube.wait(answers, what=f"{kind} {name} to answer {expected}", timeout=90, interval=1)
        assert not port_forwards(ns), "the port-forward outlived the call"

    run_plugin_tutorial(kube, ns, {"v1": registry_images["scorer:v1"], "v2": registry_images["scorer:v2"]},
                        call=call)
