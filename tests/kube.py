"""A thin helper over the Kubernetes client for tests: typed API groups and waiting with deadlines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

from kiln.admission.process import listening

T = TypeVar("T")


class Kube:
    def __init__(self, api: client.ApiClient, kubeconfig: Path) -> None:
        self.api = api
        self.kubeconfig = kubeconfig
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.ext = client.ApiextensionsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    @staticmethod
    def wait(check: Callable[[], T], *, what: str, timeout: float = 60.0, interval: float = 0.2) -> T:
        """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    @staticmethod
    def exists(read: Callable[..., Any], *args: Any) -> bool:
        try:
            read(*args)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = os.environ.get("KUBECTL", "kubectl")
        r = subprocess.run([exe, f"--kubeconfig={self.kubeconfig}", *args], input=input, text=True,
                           capture_output=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
        return r

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def delete_webhook_configurations(self, name: str) -> None:
        """Remove both webhook configurations of that name, if there: a leftover fail-closed one would
        block the next run."""
        for delete in (self.admission.delete_validating_webhook_configuration,
                       self.admission.delete_mutating_webhook_configuration):
            try:
                delete(name)
            except ApiException as e:
                if e.status != 404:
                    raise

    @staticmethod
    def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == type_:
                return dict(c)
        return None


def webhooks_effective(kube: Kube, namespace: str = "default") -> bool:
    """Whether the API server calls Kiln's webhooks (it picks up new configurations asynchronously): a
    dry run that only the webhook refuses (a Deployment of a missing artifact) tells."""
    from kubernetes.client.rest import ApiException

    try:
        kube.custom.create_namespaced_custom_object(
            "kiln.dev", "v1alpha1", namespace, "deployments",
            {"apiVersion": "kiln.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": "probe"},
             "spec": {"artifactRef": {"name": "kiln-probe-does-not-exist"}}}, dry_run="All")
    except ApiException as e:
        return "kiln-probe-does-not-exist not found" in str(e.body)
    return False


# The registries of the tests' made-up images (registry.example/app:1, nginx:1.27): their tags are kept
# at registration, and nothing is sent there. The local cluster's registry (127.0.0.1:5001) is resolved.
FAKE_REGISTRIES = "registry.example,docker.io"


class Operator:
    """`kiln run` as a subprocess: started, stopped gracefully, or killed like a crash."""

    WEBHOOK_CONFIG = "kiln.dev"  # both the validating and the mutating configuration

    def __init__(self, kube: Kube, workdir: Path, kubeconfig: Path | None = None, args: tuple[str, ...] = ()) -> None:
        self.kube = kube
        self.workdir = workdir
        self.kubeconfig = kubeconfig or kube.kubeconfig  # the operator's own credentials
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.runs}.log"

    def port_of(self, flag: str) -> int | None:
        """The port given with ``flag`` (e.g. --metrics-port), if any."""
        args = list(self.args)
        return int(args[args.index(flag) + 1]) if flag in args else None

    def start(self) -> None:
        import sys

        self.runs += 1
        env = {"KILN_DIGEST_SKIP_REGISTRIES": FAKE_REGISTRIES, **os.environ, "KUBECONFIG": str(self.kubeconfig),
               "KILN_OPERATOR_DIR": str(self.workdir)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "kiln.cli", "run", *self.args], env=env,
                                         stdout=out, stderr=subprocess.STDOUT)
        started = self.log

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, started.read_text()[-4000:]
            m = re.search(r"webhooks served on https://127.0.0.1:(\d+)", started.read_text())
            if not m:
                return False
            return listening(int(m.group(1)))  # the webhook server listens

        self.kube.wait(ready, what="the operator to start and serve its webhooks", timeout=60)
        if "--no-register-webhooks" not in self.args:
            self.kube.wait(lambda: webhooks_effective(self.kube), what="the API server to call the new webhooks",
                           timeout=30)

    @property
    def webhook_port(self) -> int:
        m = re.search(r"webhooks served on https://127.0.0.1:(\d+)", self.log.read_text())
        assert m, "the operator has not started its webhook server"
        return int(m.group(1))

    def review(self, hook: str, plural: str, operation: str, obj: dict[str, Any] | None,
               old: dict[str, Any] | None, username: str = "alice") -> dict[str, Any]:
        """POST an AdmissionReview to one of the operator's webhooks, over TLS checked against its CA."""
        import ssl
        import urllib.request

        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "test", "kind": {"group": "kiln.dev", "version": "v1alpha1", "kind": plural[:-1].title()},
            "resource": {"group": "kiln.dev", "version": "v1alpha1", "resource": plural},
            "requestKind": {"group": "kiln.dev", "version": "v1alpha1", "kind": plural[:-1].title()},
            "requestResource": {"group": "kiln.dev", "version": "v1alpha1", "resource": plural},
            "name": (obj or old or {})["metadata"]["name"], "namespace": "default", "operation": operation,
            "userInfo": {"username": username, "groups": ["system:authenticated"]},
            "object": obj, "oldObject": old, "dryRun": False, "options": None}}
        ctx = ssl.create_default_context(cafile=str(self.workdir / "webhook-certs" / "ca.crt"))
        req = urllib.request.Request(f"https://127.0.0.1:{self.webhook_port}/{hook}", method="POST",
                                     data=json.dumps(review).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return dict(json.loads(r.read())["response"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def remove_webhooks(self) -> None:
        """A webhook configuration left behind by a crashed run would slow or block the next."""
        self.kube.delete_webhook_configurations(self.WEBHOOK_CONFIG)
