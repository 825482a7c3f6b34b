"""Fixtures of the chart, image and GitOps tests: helm, kubectl and kstatus binaries, chart renders."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import Kube

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kiln"
BIN = REPO / ".venv" / "bin"
Obj = dict[str, Any]


def _tool(name: str, build: str) -> Path:
    """A tool `make setup` links into .venv/bin, else built (cached) by its hack/ script."""
    exe = BIN / name
    if os.access(exe, os.X_OK):
        return exe
    out = subprocess.run(["bash", str(REPO / build)], check=True, capture_output=True, text=True, timeout=1800)
    return Path(out.stdout.strip().splitlines()[-1])


class Helm:
    def __init__(self, exe: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.exe = exe
        self.kubeconfig = kubeconfig
        # Helm's caches, configuration and release plugins stay out of the user's home.
        self.env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        kc = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        r = subprocess.run([str(self.exe), *args, *kc], capture_output=True, text=True, env=self.env,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def template(self, *args: str, namespace: str = "kiln-system", release: str = "kiln") -> str:
        return self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout

    def objects(self, *args: str, namespace: str = "kiln-system", release: str = "kiln") -> list[Obj]:
        return [d for d in yaml.safe_load_all(self.template(*args, namespace=namespace, release=release)) if d]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objs: list[Obj]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def container(objs: list[Obj]) -> Obj:
    (c,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="session")
def helm_exe() -> Path:
    return _tool("helm", "hack/helm/build.sh")


@pytest.fixture(scope="session")
def helm(helm_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm for rendering only (no cluster)."""
    return Helm(helm_exe, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def cluster_helm(helm_exe: Path, kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm against the test cluster."""
    return Helm(helm_exe, tmp_path_factory.mktemp("helm-home"), kube.kubeconfig)


@pytest.fixture(scope="session")
def kstatus() -> Path:
    return _tool("kstatus", "hack/kstatus/build.sh")


@pytest.fixture(scope="package", autouse=True)
def matching_kubectl() -> Iterator[None]:
    """tests/kube.py runs $KUBECTL or `kubectl`: use the one built with the control plane when `make
    setup` linked it (as `make test` does through PATH), whatever PATH says."""
    with pytest.MonkeyPatch.context() as mp:
        if os.access(BIN / "kubectl", os.X_OK) and "KUBECTL" not in os.environ:
            mp.setenv("KUBECTL", str(BIN / "kubectl"))
        yield


STANDIN_CRDS = Path(__file__).with_name("cert-manager-standin-crds.yaml")


@pytest.fixture(scope="package")
def cert_manager_crds(kube: Kube) -> Iterator[None]:
    """cert-manager.io Issuer and Certificate kinds, so that manifests using them can be applied with
    --dry-run=server: cert-manager's own CRDs when installed, otherwise schemaless stand-ins
    (this file's neighbour), removed afterwards. Only the kinds are checked this way, not their fields:
    test_chart checks the objects themselves."""
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(STANDIN_CRDS.read_text())]
    present = [n for n in names if kube.exists(kube.ext.read_custom_resource_definition, n)]
    if present:
        yield
        return
    kube.kubectl("apply", "--server-side", "-f", str(STANDIN_CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
    try:
        yield
    finally:
        kube.kubectl("delete", "--ignore-not-found", "-f", str(STANDIN_CRDS))


def kubectl_json(kube: Kube, *args: str) -> Any:
    return json.loads(kube.kubectl(*args, "-o", "json").stdout)
