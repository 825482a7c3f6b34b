"""Restart latency on the real node: a Draft Artifact edit until the new container is Ready and answers.

A private local cluster with a real node (its own state directory, its own network slot), the
tutorial's model server (examples/scorer) pushed to that cluster's registry, the operator (`kiln run`)
in a subprocess. Each edit changes the Artifact's SCORER_VERSION (the scorer answers it as "version"),
so an answer carrying the edit's value can only come from the new container. Timed from the PATCH:

- ``ready``: the new pod Ready in the API (the kubelet's readiness probe of /ready passed);
- ``answer``: the new pod's IP answers POST /predict with the new version (from this host, through the
  route into the node's network namespace);
- ``service``: the Workload's Service (ClusterIP, through the node's kube-proxy) answers it.

The headline latency is ready and answering: max(ready, answer). All traffic goes to 127.0.0.1 or to
the private cluster's own address ranges. Run alone: ``.venv/bin/python bench/realnode.py`` (EDITS=N);
``bench/run.py`` calls :func:`measure`.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kiln_dev import cluster, images

ROOT = Path(__file__).resolve().parents[1]
# The kubernetes client takes JSON dicts where its hints name its model classes, and its config loaders
# have no hints: used as Any (as kiln.kube does).
_client: Any = client
_config: Any = config
G, V = "kiln.dev", "v1alpha1"
QUICK = bool(os.environ.get("BENCH_QUICK"))
EDITS = 5 if QUICK else 20
TARGET_P95_S = 3.0
ARTIFACT, WORKLOAD = "scorer", "w"
SERVICE = f"{WORKLOAD}-dev"  # kiln.api.models.DEV_SERVICE_SUFFIX
# As the tutorial's tests probe the scorer: Ready means /ready answered 200 (no initial delay).
READY_PROBE: dict[str, Any] = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}
NODE_SELECTOR = "scheduler.alpha.kubernetes.io/node-selector"  # the API server's PodNodeSelector plugin
POLL_S = 0.02
EDIT_TIMEOUT_S = 60.0
# Never through a proxy: every request goes to 127.0.0.1 or into the private cluster.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg: str) -> None:
    print(f"[bench realnode {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def pct(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q * 100) - 1]


def scorer(image: str, version: str) -> dict[str, Any]:
    return {"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}],
            "env": [{"name": "SCORER_VERSION", "value": version}], "readinessProbe": READY_PROBE}


def predict(host: str) -> str | None:
    """The version the scorer at host:8080 answers, or None when nothing answers."""
    req = urllib.request.Request(f"http://{host}:8080/predict", data=b'{"features": [2]}',
                                 headers={"Content-Type": "application/json"})
    try:
        with _HTTP.open(req, timeout=0.5) as r:
            return str(json.loads(r.read()).get("version"))
    except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException):  # a pod stopping mid-reply
        return None


def version_of(pod: dict[str, Any]) -> str | None:
    for env in pod["spec"]["containers"][0].get("env") or []:
        if env.get("name") == "SCORER_VERSION":
            return str(env.get("value"))
    return None


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


def is_running(pod: dict[str, Any]) -> bool:
    return any("running" in (s.get("state") or {}) for s in pod.get("status", {}).get("containerStatuses") or [])


class Operator:
    """`kiln run` against the private cluster, stopped by its pid."""

    def __init__(self, kubeconfig: Path, paths: cluster.Paths, registry: str, workdir: Path) -> None:
        # KILN_CLUSTER_DIR: `kiln run` reads the private cluster's state, not the default cluster's
        # (which may run next to this one). Draft Artifacts are never resolved (only registration
        # resolves digests); the mirror is set as `kiln run` sets it for the local cluster anyway.
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KILN_OPERATOR_DIR": str(workdir / "operator"),
                    "KILN_CLUSTER_DIR": str(paths.root),
                    "KILN_REGISTRY_MIRRORS": f"{images.REGISTRY}=http://{registry}"}
        self.log = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "kiln.cli", "run"], env=self.env, stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln run exited ({self.proc.returncode}): "
                                   f"{self.log.read_text(errors='replace')[-3000:]}")
            return "registered validating" in self.log.read_text(errors="replace")

        wait(up, 60, "the operator up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def follow(core: Any, ns: str, version: str, service_ip: str, t0: float) -> dict[str, float]:
    """Seconds from t0 until the pod of `version` appears (created), runs, is Ready, answers at its IP,
    and until the Service answers with it."""
    marks: dict[str, float] = {}
    deadline = t0 + EDIT_TIMEOUT_S
    while time.monotonic() < deadline:
        raw = core.list_namespaced_pod(ns, label_selector=f"kiln.dev/workload={WORKLOAD}", _preload_content=False)
        pods = [p for p in json.loads(raw.data)["items"]
                if not p["metadata"].get("deletionTimestamp") and version_of(p) == version]
        now = time.monotonic() - t0
        if pods:
            pod = pods[0]
            marks.setdefault("created", now)
            if is_running(pod):
                marks.setdefault("running", now)
            if is_ready(pod):
                marks.setdefault("ready", now)
            ip = pod.get("status", {}).get("podIP")
            if ip and "answer" not in marks and predict(ip) == version:
                marks["answer"] = time.monotonic() - t0
        if "service" not in marks and predict(service_ip) == version:
            marks["service"] = time.monotonic() - t0
        if {"ready", "answer", "service"} <= marks.keys():
            return marks
        time.sleep(POLL_S)
    raise TimeoutError(f"edit {version}: not ready and answering in {EDIT_TIMEOUT_S}s (so far: {marks})")


def measure(workdir: Path, edits: int = EDITS) -> dict[str, Any]:
    """A private cluster with a real node in workdir/realnode-cluster, the scorer as a Draft Artifact run
    by a Workload, then `edits` edits of the Artifact: each timed from the PATCH until the new pod is
    Ready and answers the new version (its IP), with PATCH -> Ready and PATCH -> the Service answering
    beside it. Everything started here is stopped at the end."""
    paths = cluster.Paths(workdir / "realnode-cluster")
    setup: dict[str, float] = {}
    operator: Operator | None = None
    try:
        t = time.monotonic()
        log(f"starting a private cluster with a real node in {paths.root}")
        kubeconfig = cluster.up(paths, real_node=True)
        st = cluster.read_state(paths) or {}
        real = st.get("node") or {}
        if "slot" not in real:
            raise RuntimeError(f"no real node: {real.get('unavailable', 'the private cluster has none')}")
        setup["cluster_up_s"] = time.monotonic() - t
        log(f"real node in slot {real['slot']} (netns kiln-{real['slot']}, registry {real['registry']})")

        t = time.monotonic()
        bindir = Path(st["bin"])
        refs = images.build(bindir, ("scorer",))
        pushed = images.push(refs, int(real["registry"].rsplit(":", 1)[1]))
        image = f"{images.REGISTRY}/kiln/scorer:v1"
        assert image in pushed, pushed
        setup["images_s"] = time.monotonic() - t

        t = time.monotonic()
        kubectl = str(bindir / "kubectl") if (bindir / "kubectl").exists() else "kubectl"
        for args in (("apply", "--server-side", "-f", str(ROOT / "crds")),
                     ("wait", "--for=condition=Established", "crd/artifacts.kiln.dev", "crd/workloads.kiln.dev")):
            subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", *args], check=True, capture_output=True)
        operator = Operator(kubeconfig, paths, real["registry"], workdir)
        operator.start()
        setup["operator_s"] = time.monotonic() - t

        api = _config.new_client_from_config(config_file=str(kubeconfig))
        core, custom = _client.CoreV1Api(api), _client.CustomObjectsApi(api)
        ns = f"bench-real-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": ns, "annotations": {NODE_SELECTOR: "kiln.dev/node=real"}}})

        def default_sa() -> bool:
            try:
                core.read_namespaced_service_account("default", ns)
                return True
            except ApiException:
                return False

        wait(default_sa, 60, "the default ServiceAccount")
        t = time.monotonic()
        custom.create_namespaced_custom_object(G, V, ns, "artifacts", {
            "apiVersion": f"{G}/{V}", "kind": "Artifact", "metadata": {"name": ARTIFACT},
            "spec": {"containers": [scorer(image, "e0")]}})
        custom.create_namespaced_custom_object(G, V, ns, "workloads", {
            "apiVersion": f"{G}/{V}", "kind": "Workload", "metadata": {"name": WORKLOAD},
            "spec": {"artifactRef": {"name": ARTIFACT}}})
        service_ip = wait(lambda: _cluster_ip(core, ns), 60, f"Service {SERVICE}")
        first = follow(core, ns, "e0", service_ip, t)  # the first pull of the image included
        setup["first_pod_s"] = first["ready"]
        node = wait(lambda: _node_of(core, ns), 10, "the first pod's node")
        if node != "kiln-real":
            raise RuntimeError(f"the pod runs on {node}, not on the real node")

        log(f"{edits} draft edits (pod on {node}, Service {SERVICE} at {service_ip})")
        runs: list[dict[str, float]] = []
        t_edits = time.monotonic()
        for i in range(1, edits + 1):
            version = f"e{i}"
            t0 = time.monotonic()
            custom.patch_namespaced_custom_object(G, V, ns, "artifacts", ARTIFACT,
                                                  {"spec": {"containers": [scorer(image, version)]}})
            marks = follow(core, ns, version, service_ip, t0)
            marks["latency"] = max(marks["ready"], marks["answer"])
            runs.append(marks)
            log(f"edit {i}: ready and answering {marks['latency']:.2f} s (created {marks['created']:.2f}, "
                f"running {marks.get('running', float('nan')):.2f}, answer {marks['answer']:.2f}, "
                f"ready {marks['ready']:.2f}, Service {marks['service']:.2f})")
        setup["edits_s"] = time.monotonic() - t_edits
    finally:
        if operator is not None:
            log("stopping the operator")
            operator.stop()
        log(f"stopping the private cluster in {paths.root}")
        cluster.down(paths)

    lat = [r["latency"] for r in runs]

    def col(key: str) -> list[float]:
        return [r[key] for r in runs if key in r]

    out: dict[str, Any] = {
        "edits": len(lat), "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "max_s": max(lat),
        "latencies_s": [round(x, 3) for x in lat],
        "ready_p50_s": pct(col("ready"), 0.5), "ready_p95_s": pct(col("ready"), 0.95),
        "answer_p95_s": pct(col("answer"), 0.95), "service_p50_s": pct(col("service"), 0.5),
        "service_p95_s": pct(col("service"), 0.95),
        # Medians of each step, from the PATCH: what the latency is made of.
        "steps_p50_s": {k: round(pct(col(k), 0.5), 3) for k in ("created", "running", "answer", "ready", "service")
                        if col(k)},
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
        "probe": READY_PROBE, "target_p95_s": TARGET_P95_S, "setup_s": {k: round(v, 1) for k, v in setup.items()},
    }
    out["met"] = out["p95_s"] <= TARGET_P95_S
    return out


def _cluster_ip(core: Any, ns: str) -> str | None:
    try:
        ip = core.read_namespaced_service(SERVICE, ns).spec.cluster_ip
    except ApiException:
        return None
    return str(ip) if ip and ip != "None" else None


def _node_of(core: Any, ns: str) -> str | None:
    pods = core.list_namespaced_pod(ns, label_selector=f"kiln.dev/workload={WORKLOAD}").items
    return str(pods[0].spec.node_name) if pods and pods[0].spec.node_name else None


if __name__ == "__main__":
    result = measure(Path(tempfile.mkdtemp(prefix="kiln-bench-realnode-")), int(os.environ.get("EDITS", EDITS)))
    print(json.dumps(result, indent=2))
