"""A real local Kubernetes control plane on 127.0.0.1, for development and tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (a simulated node) are
built once from Go modules by ``hack/build-control-plane.sh`` into a cache keyed by version, and
started here as child processes. Every pid is recorded in the state directory, so ``down`` stops
exactly what ``up`` started, also after a crash left stale state behind.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
NODE_NAME = "kwok-node-0"
HOST = "127.0.0.1"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# What `up` creates in the state directory, and all that `down` removes from it.
OWNED = ("state.json", "kubeconfig", "pki", "logs", "etcd")


def state_dir() -> Path:
    """Where the running cluster keeps its certificates, data, logs and pids (an empty variable counts
    as unset: it must never mean the current directory)."""
    default = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "kiln" / "cluster"
    return Path(os.environ.get("KILN_CLUSTER_DIR") or default)


def log(msg: str) -> None:
    print(f"[kiln cluster] {msg}", file=sys.stderr, flush=True)


@dataclass
class Paths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def build_binaries() -> Path:
    """Build (or find in the cache) the control-plane binaries; returns their directory."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


_MAKE_SERVING_CERTIFICATE = """
import sys, pathlib, trustme
d = pathlib.Path(sys.argv[1])
d.mkdir(parents=True, exist_ok=True)
ca = trustme.CA(organization_name="kiln local webhooks")
leaf = ca.issue_cert("127.0.0.1", "localhost")
ca.cert_pem.write_to_path(str(d / "ca.crt"))
leaf.cert_chain_pems[0].write_to_path(str(d / "tls.crt"))
leaf.private_key_pem.write_to_path(str(d / "tls.key"))
(d / "tls.key").chmod(0o600)
"""


def serving_certificate(certdir: Path) -> None:
    """A CA (ca.crt) and a serving certificate for 127.0.0.1 (tls.crt, tls.key) in certdir, made in a
    short-lived process: the operator does not keep the cryptography library in memory for a one-off."""
    subprocess.run([sys.executable, "-c", _MAKE_SERVING_CERTIFICATE, str(certdir)], check=True)


# --- processes -------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a pid, to tell our process from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has exited already


def _alive(proc: dict[str, Any]) -> bool:
    return bool(_start_time(int(proc["pid"])) == proc["start"])


def _spawn(name: str, argv: list[str], paths: Paths) -> dict[str, Any]:
    logf = open(paths.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    logf.close()
    return {"name": name, "pid": p.pid, "start": _start_time(p.pid), "argv": argv}


def _stop(proc: dict[str, Any], timeout: float = 15.0) -> None:
    pid = int(proc["pid"])
    if not _alive(proc):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(proc):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# --- certificates and kubeconfig --------------------------------------------------------------


def _write_pki(paths: Paths) -> None:
    # Imported here: the operator imports this module (free_port) and need not load cryptography.
    import trustme
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    p = paths.pki
    p.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="kiln local cluster")
    ca.cert_pem.write_to_path(str(p / "ca.crt"))
    ca.private_key_pem.write_to_path(str(p / "ca.key"))
    serving = ca.issue_cert(HOST, "10.96.0.1", "localhost", "kubernetes", "kubernetes.default",
                            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                            common_name="kube-apiserver")
    serving.cert_chain_pems[0].write_to_path(str(p / "apiserver.crt"))
    serving.private_key_pem.write_to_path(str(p / "apiserver.key"))
    admin = ca.issue_cert("kiln-admin", common_name="kiln-admin", organization_name="system:masters")
    admin.cert_chain_pems[0].write_to_path(str(p / "admin.crt"))
    admin.private_key_pem.write_to_path(str(p / "admin.key"))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (p / "sa.key").write_bytes(sa.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.TraditionalOpenSSL,
                                                serialization.NoEncryption()))
    (p / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    for key in p.glob("*.key"):
        key.chmod(0o600)


def _write_kubeconfig(paths: Paths, port: int) -> None:
    p = paths.pki
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kiln-local", "cluster": {
            "server": f"https://{HOST}:{port}", "certificate-authority": str(p / "ca.crt")}}],
        "users": [{"name": "kiln-admin", "user": {
            "client-certificate": str(p / "admin.crt"), "client-key": str(p / "admin.key")}}],
        "contexts": [{"name": "kiln-local", "context": {"cluster": "kiln-local", "user": "kiln-admin",
                                                        "namespace": "default"}}],
        "current-context": "kiln-local",
    }
    paths.kubeconfig.write_text(json.dumps(cfg, indent=2))
    paths.kubeconfig.chmod(0o600)


def _ssl_context(paths: Paths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    ctx.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (OSError, ssl.SSLError):
        return 0, b""


def _request(paths: Paths, port: int, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://{HOST}:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=_ssl_context(paths), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _wait(what: str, check: Any, timeout: float, procs: list[dict[str, Any]], paths: Paths) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for proc in procs:
            if not _alive(proc):
                tail = (paths.logs / f"{proc['name']}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{proc['name']} exited while waiting for {what}; log tail:\n{tail}")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (logs: {paths.logs})")


# --- public API ------------------------------------------------------------------------------


def read_state(paths: Paths | None = None) -> dict[str, Any] | None:
    paths = paths or Paths(state_dir())
    try:
        return dict(json.loads(paths.state.read_text()))
    except (OSError, ValueError):
        return None


def status(paths: Paths | None = None) -> dict[str, Any]:
    """What runs: each recorded component with its pid and whether it is alive, and API health."""
    paths = paths or Paths(state_dir())
    st = read_state(paths)
    if st is None:
        return {"running": False, "components": {}}
    comps = {p["name"]: {"pid": p["pid"], "alive": _alive(p)} for p in st["processes"]}
    code, _ = _get(f"https://{HOST}:{st['ports']['apiserver']}/readyz", _ssl_context(paths))
    return {"running": all(c["alive"] for c in comps.values()) and code == 200,
            "apiReady": code == 200, "components": comps, "kubeconfig": str(paths.kubeconfig),
            "stateDir": str(paths.root), "ports": st["ports"]}


def up(paths: Paths | None = None, timeout: float = 120.0) -> Path:
    """Start the control plane unless it already runs; returns the kubeconfig path."""
    paths = paths or Paths(state_dir())
    if read_state(paths) is not None:
        if status(paths)["running"]:
            return paths.kubeconfig
        log("stale state from an earlier run found: cleaning it up")
        down(paths)
    bindir = build_binaries()
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(exist_ok=True)
    _write_pki(paths)
    ports = {"etcdClient": free_port(), "etcdPeer": free_port(), "apiserver": free_port(),
             "controllerManager": free_port(), "scheduler": free_port()}
    _write_kubeconfig(paths, ports["apiserver"])
    procs: list[dict[str, Any]] = []
    state = {"ports": ports, "processes": procs, "bin": str(bindir),
             "started": datetime.datetime.now(datetime.UTC).isoformat()}

    def record(proc: dict[str, Any]) -> None:
        procs.append(proc)
        paths.state.write_text(json.dumps(state, indent=2))

    try:
        _start_all(paths, bindir, ports, record, procs, timeout)
    except BaseException:
        log("start-up failed: stopping what was started")
        down(paths, keep_logs=True)
        raise
    return paths.kubeconfig


def _start_all(paths: Paths, bindir: Path, ports: dict[str, int], record: Any,
               procs: list[dict[str, Any]], timeout: float) -> None:
    b, p, kc = bindir, paths.pki, str(paths.kubeconfig)
    etcd_url = f"http://{HOST}:{ports['etcdClient']}"
    log(f"starting etcd on {etcd_url}")
    record(_spawn("etcd", [
        str(b / "etcd"), "--name=kiln", f"--data-dir={paths.root / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls=http://{HOST}:{ports['etcdPeer']}",
        f"--initial-advertise-peer-urls=http://{HOST}:{ports['etcdPeer']}",
        f"--initial-cluster=kiln=http://{HOST}:{ports['etcdPeer']}",
        "--listen-metrics-urls=", "--unsafe-no-fsync=true", "--auto-compaction-retention=1",
        "--quota-backend-bytes=4294967296", "--log-level=warn"], paths))
    _wait("etcd", lambda: _get(f"{etcd_url}/health")[0] == 200, 30, procs, paths)

    api = f"https://{HOST}:{ports['apiserver']}"
    log(f"starting kube-apiserver on {api}")
    record(_spawn("kube-apiserver", [
        str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}",
        f"--bind-address={HOST}", f"--secure-port={ports['apiserver']}", f"--advertise-address={HOST}",
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
        "--enable-priority-and-fairness=false", "--max-requests-inflight=0",
        "--max-mutating-requests-inflight=0", "--profiling=false"], paths))
    ctx = _ssl_context(paths)
    _wait("kube-apiserver /readyz", lambda: _get(f"{api}/readyz", ctx)[0] == 200, timeout, procs, paths)

    common = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
              f"--bind-address={HOST}", "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
              "--leader-elect=false", "--kube-api-qps=500", "--kube-api-burst=1000"]
    log("starting kube-controller-manager, kube-scheduler and kwok")
    record(_spawn("kube-controller-manager", [
        str(b / "kube-controller-manager"), *common, f"--secure-port={ports['controllerManager']}",
        f"--root-ca-file={p / 'ca.crt'}", f"--service-account-private-key-file={p / 'sa.key'}",
        "--use-service-account-credentials=false", "--controllers=*",
        "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
        "--concurrent-gc-syncs=20"], paths))
    record(_spawn("kube-scheduler", [
        str(b / "kube-scheduler"), *common, f"--secure-port={ports['scheduler']}"], paths))
    record(_spawn("kwok", [
        str(b / "kwok"), f"--kubeconfig={kc}", f"--config={b / 'kwok-stages.yaml'}",
        "--manage-all-nodes=true", "--cidr=10.244.0.0/16", f"--node-ip={HOST}",
        "--node-lease-duration-seconds=40"], paths))

    node = {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": NODE_NAME, "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                   "kubernetes.io/arch": "amd64", "type": "kwok"}},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "10000"}}}
    _wait("the simulated node to be created",
          lambda: _request(paths, ports["apiserver"], "POST", "/api/v1/nodes", node) in (201, 409),
          30, procs, paths)

    def node_ready() -> bool:
        code, body = _get(f"{api}/api/v1/nodes/{NODE_NAME}", ctx)
        conds = json.loads(body).get("status", {}).get("conditions", []) if code == 200 else []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    _wait(f"node {NODE_NAME} to be Ready", node_ready, 60, procs, paths)
    _wait("serviceaccount default/default",
          lambda: _get(f"{api}/api/v1/namespaces/default/serviceaccounts/default", ctx)[0] == 200,
          60, procs, paths)


def down(paths: Paths | None = None, keep_logs: bool = False) -> list[str]:
    """Stop every recorded process (by pid, checked against its start time) and clean up."""
    paths = paths or Paths(state_dir())
    st = read_state(paths)
    stopped = []
    if st is not None:
        # Reverse order of start: node simulator and controllers first, etcd last.
        for proc in reversed(st["processes"]):
            if _alive(proc):
                _stop(proc)
                stopped.append(f"{proc['name']} (pid {proc['pid']})")
    # Only what `up` made goes: the state directory may have been pointed at one holding other files.
    for child in (paths.root / name for name in OWNED):
        if keep_logs and child == paths.logs:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        elif child.exists() or child.is_symlink():
            child.unlink()
    with contextlib.suppress(OSError):  # removed only when nothing else is left in it
        paths.root.rmdir()
    return stopped
