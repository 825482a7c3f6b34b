"""GitOps: the kustomize base is the chart's, and applies; the Argo CD health checks (Lua) and kstatus
(what Flux reads) follow the conditions the operator writes, on real objects."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from lupa import lua51

from tests.chart.conftest import CHART, REPO, Helm
from tests.integration.test_deployments import deployment, wait_ready
from tests.integration.test_registration import register
from tests.integration.test_workloads import artifact, container, create, get, patch, wait_running, workload
from tests.kube import Kube, Operator

BASE = REPO / "deploy" / "kustomize" / "base"
ARGOCD = REPO / "deploy" / "argocd"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def generate(helm: Helm) -> ModuleType:
    """deploy/generate.py, with the tests' helm."""
    spec = importlib.util.spec_from_file_location("kiln_deploy_generate", REPO / "deploy" / "generate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.helm = lambda: str(helm.exe)  # type: ignore[attr-defined]
    return mod


# --- the kustomize base --------------------------------------------------------------------------------


def test_generated_files_are_up_to_date(generate: ModuleType) -> None:
    want: dict[str, str] = generate.base_files()
    have = {str(p.relative_to(BASE)): p.read_text() for p in BASE.rglob("*") if p.is_file()}
    assert have.keys() == want.keys(), "run `make manifests`"
    for rel, text in want.items():
        assert have[rel] == text, f"deploy/kustomize/base/{rel} is stale: run `make manifests`"
    assert (ARGOCD / "argocd-cm-patch.yaml").read_text() == generate.argocd_patch(), "run `make manifests`"
    assert (REPO / "charts" / "kiln" / "files" / "webhooks.json").read_text() == generate.webhooks_file(), \
        "the chart's webhooks differ from kiln.admission.configuration: run `make manifests`"
    assert (REPO / "charts" / "kiln" / "files" / "policies.json").read_text() == generate.policies_file(), \
        "the chart's admission policies differ from kiln.admission.configuration: run `make manifests`"
    doc = (REPO / "docs" / "gitops.md").read_text()
    assert doc == generate.gitops_doc(doc), "docs/gitops.md's argocd-cm block is stale: run `make manifests`"


def test_kustomize_base_is_the_chart_with_cert_manager() -> None:
    objs = [d for d in yaml.safe_load_all(_kubectl("kustomize", str(BASE))) if d]
    by_kind: dict[str, list[str]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o["metadata"]["name"])
    crds = sorted(yaml.safe_load(p.read_text())["metadata"]["name"] for p in (REPO / "crds").glob("*.yaml"))
    generated = json.loads((CHART / "files" / "policies.json").read_text())
    policies = sorted(f"kiln-system-kiln-{o['suffix']}" for o in generated if o["kind"] == "ValidatingAdmissionPolicy")
    assert {k: sorted(v) for k, v in by_kind.items()} == {
        "Namespace": ["kiln-system"],
        "CustomResourceDefinition": crds,
        "ServiceAccount": ["kiln"], "ClusterRoleBinding": ["kiln-system-kiln"],
        "ClusterRole": sorted(["kiln-system-kiln", *(f"kiln{r['metadata']['name']}" for r in json.loads(
            (CHART / "files" / "roles.json").read_text()))]),
        "Role": ["kiln-leader-election", "kiln-versions"],
        "RoleBinding": ["kiln-leader-election", "kiln-versions"],
        "Service": ["kiln-metrics", "kiln-webhook"], "Deployment": ["kiln"], "PodDisruptionBudget": ["kiln"],
        "Issuer": ["kiln-selfsigned", "kiln-webhook-ca"], "Certificate": ["kiln-webhook", "kiln-webhook-ca"],
        "ValidatingWebhookConfiguration": ["kiln-system-kiln"], "MutatingWebhookConfiguration": ["kiln-system-kiln"],
        "ValidatingAdmissionPolicy": policies,
        "ValidatingAdmissionPolicyBinding": policies,
    }
    assert not [o for o in objs if o["kind"] == "Secret"], "no key material in git"
    for o in objs:
        labels = o["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/managed-by") != "Helm", o["metadata"]["name"]


def _kubectl(*args: str, input: str | None = None) -> str:
    import os

    exe = os.environ.get("KUBECTL", "kubectl")
    return subprocess.run([exe, *args], input=input, capture_output=True, text=True, check=True, timeout=120).stdout


@pytest.fixture
def kiln_system(kube: Kube) -> Iterator[None]:
    """The base's namespace, for real (a server-side dry run cannot create a namespace and use it), with
    the base's labels; deleted afterwards when this test made it."""
    if kube.exists(kube.core.read_namespace, "kiln-system"):
        yield
        return
    kube.kubectl("apply", "-f", str(BASE / "namespace.yaml"))
    try:
        yield
    finally:
        kube.core.delete_namespace("kiln-system")
        kube.wait(lambda: not kube.exists(kube.core.read_namespace, "kiln-system"), what="kiln-system deleted")


@pytest.mark.cluster
def test_kustomize_base_applies(kube: Kube, crds: None, cert_manager_crds: None, kiln_system: None) -> None:
    r = kube.kubectl("apply", "-k", str(BASE), "--server-side", "--force-conflicts", "--dry-run=server")
    lines = r.stdout.splitlines()
    objects = [d for d in yaml.safe_load_all(_kubectl("kustomize", str(BASE))) if d]
    assert len(lines) == len(objects) and all(ln.endswith("(server dry run)") for ln in lines), r.stdout
    # The namespace enforces the restricted Pod Security Standard: the API server warns about a pod
    # template that would violate it.
    assert "PodSecurity" not in r.stderr, r.stderr


# --- Argo CD health checks and kstatus, on real objects -------------------------------------------------


def argocd_health(obj: Obj) -> tuple[str, str]:
    """The Argo CD health check of deploy/argocd for this object's kind, run as Argo CD runs it: Lua 5.1,
    the object as the global `obj`, no io/os."""
    script = (ARGOCD / f"health-{obj['kind'].lower()}.lua").read_text()
    lua = lua51.LuaRuntime()
    g = lua.globals()
    for unsafe in ("io", "os", "debug", "package", "require", "dofile", "loadfile"):
        g[unsafe] = None
    g.obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    hs = lua.execute(script)
    return str(hs["status"]), str(hs["message"])


def kstatus_of(exe: Path, obj: Obj) -> str:
    out = subprocess.run([str(exe)], input=json.dumps(obj), capture_output=True, text=True, check=True, timeout=30)
    return str(json.loads(out.stdout)["status"])


def _check(kube: Kube, kstatus: Path, ns: str, expected: dict[tuple[str, str], tuple[str, str]]) -> None:
    wrong = []
    for (plural, name), (health, ks) in expected.items():
        obj = get(kube, ns, plural, name)
        got = argocd_health(obj)
        got_ks = kstatus_of(kstatus, obj)
        if got[0] != health or got_ks != ks:
            wrong.append(f"{plural}/{name}: Argo CD {got}, kstatus {got_ks}; expected {health}, {ks}\n"
                         f"  status: {json.dumps(obj.get('status'))}")
    assert not wrong, "\n".join(wrong)


def _ready_reason(kube: Kube, ns: str, plural: str, name: str, reason: str) -> Any:
    def check() -> Obj | None:
        obj = get(kube, ns, plural, name)
        c = Kube.condition(obj, "Ready") or {}
        current = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and c.get("reason") == reason else None

    return kube.wait(check, what=f"{plural}/{name} Ready reason {reason}")


@pytest.mark.cluster
def test_health_checks_and_kstatus_follow_the_operator(kube: Kube, operator: Operator, namespace: str,
                                                      kstatus: Path) -> None:
    ns = namespace
    create(kube, ns, artifact("app", [container()]))
    create(kube, ns, artifact("release", [container()]))
    register(kube, ns, "release")
    create(kube, ns, workload("dev", ref="app"))
    create(kube, ns, workload("paused", ref="app", state="Stopped"))
    create(kube, ns, workload("orphan", ref="missing"))
    create(kube, ns, deployment("prod", artifact_ref="release"))
    wait_running(kube, ns, "dev")
    wait_ready(kube, ns, "prod")
    _ready_reason(kube, ns, "artifacts", "app", "Draft")
    _ready_reason(kube, ns, "artifacts", "release", "Registered")
    _ready_reason(kube, ns, "workloads", "paused", "Stopped")
    _ready_reason(kube, ns, "workloads", "orphan", "ArtifactNotFound")
    _check(kube, kstatus, ns, {
        ("artifacts", "app"): ("Healthy", "Current"),
        ("artifacts", "release"): ("Healthy", "Current"),
        ("workloads", "dev"): ("Healthy", "Current"),
        ("workloads", "paused"): ("Suspended", "Current"),
        ("workloads", "orphan"): ("Degraded", "InProgress"),  # kstatus has no "Failed" without Stalled
        ("deployments", "prod"): ("Healthy", "Current"),
    })

    # Changes the operator has not observed yet (it is stopped): Progressing / InProgress.
    operator.stop()
    try:
        patch(kube, ns, "workloads", "dev", {"spec": {"replicas": 2}})
        patch(kube, ns, "deployments", "prod", {"spec": {"replicas": 2}})
        patch(kube, ns, "artifacts", "app", {"spec": {"description": "v2"}})
        create(kube, ns, workload("fresh", ref="app"))
        # Its admission webhooks are down with it: a Deployment of a Draft artifact gets in.
        create(kube, ns, deployment("blocked", artifact_ref="app"))
        _check(kube, kstatus, ns, {
            ("workloads", "dev"): ("Progressing", "InProgress"),
            ("deployments", "prod"): ("Progressing", "InProgress"),
            ("artifacts", "app"): ("Progressing", "InProgress"),
            # Not seen by the operator yet: the CRD defaults status.observedGeneration to 0, behind the
            # generation, so both Argo CD and kstatus (Flux) wait.
            ("workloads", "fresh"): ("Progressing", "InProgress"),
            ("deployments", "blocked"): ("Progressing", "InProgress"),
        })
        assert "observe generation 2" in argocd_health(get(kube, ns, "workloads", "dev"))[1]
    finally:
        operator.start()

    wait_running(kube, ns, "dev", replicas=2)
    wait_running(kube, ns, "fresh")
    wait_ready(kube, ns, "prod", replicas=2)
    _ready_reason(kube, ns, "artifacts", "app", "Draft")
    _ready_reason(kube, ns, "deployments", "blocked", "ArtifactNotRegistered")
    _check(kube, kstatus, ns, {
        ("workloads", "dev"): ("Healthy", "Current"),
        ("workloads", "fresh"): ("Healthy", "Current"),
        ("deployments", "prod"): ("Healthy", "Current"),
        ("artifacts", "app"): ("Healthy", "Current"),
        ("deployments", "blocked"): ("Degraded", "InProgress"),
    })
