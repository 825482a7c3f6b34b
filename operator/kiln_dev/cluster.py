"""A real local Kubernetes cluster on 127.0.0.1, for development and tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (a simulated node, for scale)
are built once from Go modules by ``hack/build-control-plane.sh`` into a cache keyed by version, and
started here as child processes. Where the machine allows it (root, overlayfs), a real node runs next
to the simulated one (:mod:`kiln_dev.node`: containerd, kubelet, kube-proxy), with an image registry on
127.0.0.1 that it pulls from. Every pid is recorded in the state directory, so ``down`` stops exactly
what ``up`` started, also after a crash left stale state behind, and removes the real node's
namespace, link and routes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kiln.admission.process import HOST, free_port, listening
from kiln_dev import node

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
NODE_NAME = "kwok-node-0"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# With a real node, also: the registry, the host's ends of the node's two relays, the node itself.
NODE_COMPONENTS = ("registry", "relay-apiserver", "relay-registry", "node")
# What `up` creates in the state directory, and all that `down` removes from it.
OWNED = ("state.json", "kubeconfig", "pki", "logs", "etcd", "config", "registry", "node")


def state_dir() -> Path:
    """Where the running cluster keeps its certificates, data, logs and pids (an empty variable counts
    as unset: it must never mean the current directory)."""
    default = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "kiln" / "cluster"
    return Path(os.environ.get("KILN_CLUSTER_DIR") or default)


def log(msg: str) -> None:
    print(f"[kiln cluster] {msg}", file=sys.stderr, flush=True)


class Paths:
    """The files of a cluster's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state, self.kubeconfig, self.pki, self.logs = (root / n for n in ("state.json", "kubeconfig", "pki",
                                                                               "logs"))


def build_binaries() -> Path:
    """Build (or find in the cache) the control-plane binaries; returns their directory."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


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


def _spawn(name: str, argv: list[str], paths: Paths, preexec: Any = None) -> dict[str, Any]:
    logf = open(paths.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=preexec)
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


def _write_pki(paths: Paths, net: node.Network) -> None:
    import trustme
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    p = paths.pki
    p.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="kiln local cluster")
    ca.cert_pem.write_to_path(str(p / "ca.crt"))
    ca.private_key_pem.write_to_path(str(p / "ca.key"))
    serving = ca.issue_cert(HOST, net.kubernetes_service_ip, net.node_ip, "localhost", "kubernetes",
                            "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                            common_name="kube-apiserver")
    serving.cert_chain_pems[0].write_to_path(str(p / "apiserver.crt"))
    serving.private_key_pem.write_to_path(str(p / "apiserver.key"))
    # Client certificates: the admin; the API server towards kubelets (logs, exec, port-forward);
    # the real node's kubelet (the Node authorizer's identity) and kube-proxy (bound to system:node-proxier).
    for name, cn, org in (("admin", "kiln-admin", "system:masters"),
                          ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
                          ("kubelet", f"system:node:{node.NODE_NAME}", "system:nodes"),
                          ("kube-proxy", "system:kube-proxy", None)):
        cert = ca.issue_cert(name, common_name=cn, organization_name=org)
        cert.cert_chain_pems[0].write_to_path(str(p / f"{name}.crt"))
        cert.private_key_pem.write_to_path(str(p / f"{name}.key"))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (p / "sa.key").write_bytes(sa.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.TraditionalOpenSSL,
                                                serialization.NoEncryption()))
    (p / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    for key in p.glob("*.key"):
        key.chmod(0o600)


def _write_kubeconfig(path: Path, pki: Path, port: int, user: str = "admin") -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kiln-local", "cluster": {
            "server": f"https://{HOST}:{port}", "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": "kiln-local", "context": {"cluster": "kiln-local", "user": user,
                                                        "namespace": "default"}}],
        "current-context": "kiln-local",
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)


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
    """What runs: each recorded component with its pid and whether it is alive, API health, the nodes."""
    paths = paths or Paths(state_dir())
    st = read_state(paths)
    if st is None:
        return {"running": False, "components": {}}
    comps = {p["name"]: {"pid": p["pid"], "alive": _alive(p)} for p in st["processes"]}
    api = f"https://{HOST}:{st['ports']['apiserver']}"
    ctx = _ssl_context(paths)
    code, _ = _get(f"{api}/readyz", ctx)
    nodes = []
    if code == 200:
        code_nodes, body = _get(f"{api}/api/v1/nodes", ctx)
        for n in json.loads(body).get("items", []) if code_nodes == 200 else []:
            nodes.append({"name": n["metadata"]["name"], "kind": n["metadata"].get("labels", {}).get(node.LABEL, ""),
                          "ready": _ready(n), "internalIP": next(
                              (a["address"] for a in n.get("status", {}).get("addresses", [])
                               if a["type"] == "InternalIP"), "")})
    return {"running": all(c["alive"] for c in comps.values()) and code == 200 and all(n["ready"] for n in nodes),
            "apiReady": code == 200, "components": comps, "nodes": nodes, "realNode": st.get("node", {}),
            "kubeconfig": str(paths.kubeconfig), "stateDir": str(paths.root), "ports": st["ports"]}


def _ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def up(paths: Paths | None = None, timeout: float = 120.0, real_node: bool = True) -> Path:
    """Start the cluster unless it already runs; returns the kubeconfig path. A real node joins the
    simulated one when this machine allows it (:func:`kiln_dev.node.unavailable` says why not)."""
    paths = paths or Paths(state_dir())
    if read_state(paths) is not None:
        if status(paths)["running"]:
            return paths.kubeconfig
        log("stale state from an earlier run found: cleaning it up")
        down(paths)
    bindir = build_binaries()
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(exist_ok=True)
    procs: list[dict[str, Any]] = []
    state: dict[str, Any] = {"processes": procs, "bin": str(bindir),
                             "started": datetime.datetime.now(datetime.UTC).isoformat()}

    def save() -> None:
        paths.state.write_text(json.dumps(state, indent=2))

    def record(proc: dict[str, Any]) -> None:
        procs.append(proc)
        save()

    reason = node.unavailable(bindir) if real_node else "asked for the simulated node only (--no-real-node)"
    net = node.Network(0)  # without a real node its ranges are only numbers in this cluster's API
    try:
        if reason is None:
            netns_dir = node.netns_dir_state()
            net = node.claim_slot()
            state["node"] = {"slot": net.slot, "name": node.NODE_NAME, "netnsDir": netns_dir,
                             "registry": f"{HOST}:{net.registry_host_port}",
                             "registryForPods": f"{net.node_ip}:{node.REGISTRY_PORT}", "serviceCIDR": net.service_cidr,
                             "podCIDR": net.pod_cidr}
        else:
            state["node"] = {"unavailable": reason}
            log(f"no real node: {reason}. Pods run on the simulated node only.")
        state["ports"] = {"etcdClient": free_port(), "etcdPeer": free_port(), "apiserver": free_port(),
                          "controllerManager": free_port(), "scheduler": free_port()}
        save()
        _write_pki(paths, net)
        _write_kubeconfig(paths.kubeconfig, paths.pki, state["ports"]["apiserver"])
        _start_control_plane(paths, bindir, state["ports"], net, reason is None, record, procs, timeout)
        if reason is None:
            _start_real_node(paths, bindir, state, net, record, procs, save)
    except BaseException:
        log("start-up failed: stopping what was started")
        down(paths, keep_logs=True)
        raise
    return paths.kubeconfig


def _start_control_plane(paths: Paths, bindir: Path, ports: dict[str, int], net: node.Network, real: bool,
                         record: Any, procs: list[dict[str, Any]], timeout: float) -> None:
    b, p, kc = bindir, paths.pki, str(paths.kubeconfig)
    config = paths.root / "config"
    config.mkdir(exist_ok=True)
    # Pods go to the real node unless their namespace says otherwise (annotation
    # scheduler.alpha.kubernetes.io/node-selector: kiln.dev/node=kwok for the simulated one).
    default_selector = f"{node.LABEL}=real" if real else ""
    (config / "podnodeselector.yaml").write_text(json.dumps(
        {"podNodeSelectorPluginConfig": {"clusterDefaultNodeSelector": default_selector}}))
    (config / "admission.yaml").write_text(json.dumps({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration",
        "plugins": [{"name": "PodNodeSelector", "path": str(config / "podnodeselector.yaml")}]}))
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
    log(f"starting kube-apiserver on {api} (Services {net.service_cidr})")
    record(_spawn("kube-apiserver", [
        str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}",
        f"--bind-address={HOST}", f"--secure-port={ports['apiserver']}", f"--advertise-address={HOST}",
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--service-cluster-ip-range={net.service_cidr}", "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=PodNodeSelector", f"--admission-control-config-file={config / 'admission.yaml'}",
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
        f"--service-cluster-ip-range={net.service_cidr}",
        "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
        "--concurrent-gc-syncs=20"], paths))
    record(_spawn("kube-scheduler", [
        str(b / "kube-scheduler"), *common, f"--secure-port={ports['scheduler']}"], paths))
    record(_spawn("kwok", [
        str(b / "kwok"), f"--kubeconfig={kc}", f"--config={b / 'kwok-stages.yaml'}",
        "--manage-all-nodes=false", f"--manage-nodes-with-label-selector={node.LABEL}=kwok",
        f"--cidr={net.kwok_pod_cidr}", f"--node-ip={HOST}", "--node-lease-duration-seconds=40"], paths))

    kwok_node = {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": NODE_NAME, "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                   "kubernetes.io/arch": "amd64", "type": "kwok", node.LABEL: "kwok"}},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "10000"}}}
    _wait("the simulated node to be created",
          lambda: _request(paths, ports["apiserver"], "POST", "/api/v1/nodes", kwok_node) in (201, 409),
          30, procs, paths)
    _wait(f"node {NODE_NAME} to be Ready", lambda: _node_ready(api, ctx, NODE_NAME), 60, procs, paths)
    _wait("serviceaccount default/default",
          lambda: _get(f"{api}/api/v1/namespaces/default/serviceaccounts/default", ctx)[0] == 200,
          60, procs, paths)


def _node_ready(api: str, ctx: ssl.SSLContext, name: str) -> bool:
    code, body = _get(f"{api}/api/v1/nodes/{name}", ctx)
    return code == 200 and _ready(json.loads(body))


def _start_real_node(paths: Paths, bindir: Path, state: dict[str, Any], net: node.Network, record: Any,
                     procs: list[dict[str, Any]], save: Any) -> None:
    from kiln_dev import images

    ports = state["ports"]
    api = f"https://{HOST}:{ports['apiserver']}"
    ctx = _ssl_context(paths)
    layout = node.Layout(paths.root / "node")
    layout.root.mkdir(parents=True, exist_ok=True)
    # Pods reach the API server through the kubernetes Service: its endpoint is the node's relay.
    endpoints = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
        "name": "kubernetes", "namespace": "default", "labels": {
            "kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "kiln.dev-cluster"}},
        "addressType": "IPv4", "endpoints": [{"addresses": [net.node_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": node.APISERVER_PORT, "protocol": "TCP"}]}
    code = _request(paths, ports["apiserver"], "POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                    endpoints)
    if code not in (201, 409):
        raise RuntimeError(f"creating the kubernetes Service's EndpointSlice failed: HTTP {code}")

    registry = f"http://{HOST}:{net.registry_host_port}"
    if listening(net.registry_host_port):
        raise RuntimeError(f"127.0.0.1:{net.registry_host_port}, the local registry's port, is taken by another "
                           "process")
    config = paths.root / "config" / "registry.yml"
    config.write_text(json.dumps({
        "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(paths.root / "registry")}, "delete": {"enabled": True}},
        "http": {"addr": f"{HOST}:{net.registry_host_port}", "secret": os.urandom(16).hex()}}))
    log(f"starting the image registry on {registry}")
    record(_spawn("registry", ["docker-registry", "serve", str(config)], paths))
    _wait("the registry", lambda: _get(f"{registry}/v2/")[0] == 200, 30, procs, paths)
    refs = images.build(bindir, ("pause",))
    refs.update(images.built(bindir))
    log(f"pushing {', '.join(sorted({r.rsplit(':', 1)[0].removeprefix('localhost/') for r in refs.values()}))}")
    images.push(refs, net.registry_host_port)

    for name, sock, port in (("relay-apiserver", layout.apiserver_socket, ports["apiserver"]),
                             ("relay-registry", layout.registry_socket, net.registry_host_port)):
        record(_spawn(name, ["socat", f"UNIX-LISTEN:{sock},fork,unlink-early,mode=600", f"TCP:{HOST}:{port}"],
                      paths))
        _wait(f"{name}'s socket", sock.exists, 10, procs, paths)

    log(f"setting up the real node's network (namespace {net.netns}, pods {net.pod_cidr}, link {net.veth})")
    node.setup_network(net)
    kubeconfigs = {user: layout.root / f"{user}.kubeconfig" for user in ("kubelet", "kube-proxy")}
    for user, path in kubeconfigs.items():
        _write_kubeconfig(path, paths.pki, node.APISERVER_PORT, user=user)
    node.write_config(layout, net, bindir=bindir, ca=paths.pki / "ca.crt", kubeconfigs=kubeconfigs, logs=paths.logs)
    cgroups = node.cgroup_dirs(net)
    state["node"]["cgroups"] = [str(d) for d in cgroups]
    save()
    node.create_cgroups(cgroups)
    log(f"starting the real node {node.NODE_NAME} (containerd, kubelet, kube-proxy)")
    wrapper = _spawn("node", node.supervisor_argv(layout, net), paths, preexec=lambda: node.join_cgroups(cgroups))
    supervisor = _wait_child(wrapper)
    record({**wrapper, "pid": supervisor, "start": _start_time(supervisor), "wrapper": wrapper["pid"]})
    _wait(f"node {node.NODE_NAME} to be Ready", lambda: _node_ready(api, ctx, node.NODE_NAME), 120, procs, paths)


def _wait_child(proc: dict[str, Any], timeout: float = 10.0) -> int:
    """The pid of a process's first child (here: the first process of the node's pid namespace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{proc['pid']}/task/{proc['pid']}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise RuntimeError(f"{proc['name']} (pid {proc['pid']}) started no child in {timeout:.0f}s")


def down(paths: Paths | None = None, keep_logs: bool = False) -> list[str]:
    """Stop every recorded process (by pid, checked against its start time), remove the real node's
    namespace, link and routes, and the files ``up`` made."""
    paths = paths or Paths(state_dir())
    st = read_state(paths)
    stopped = []
    if st is not None:
        # Reverse order of start: the real node first, etcd last.
        for proc in reversed(st["processes"]):
            if _alive(proc):
                _stop(proc, timeout=60 if proc["name"] == "node" else 15)
                stopped.append(f"{proc['name']} (pid {proc['pid']})")
            if "wrapper" in proc:  # the node's unshare(1): it exits with the node
                _reap(int(proc["wrapper"]))
        real = st.get("node", {})
        if real.get("cgroups"):
            node.remove_cgroups([Path(d) for d in real["cgroups"]])
        if "slot" in real:
            node.teardown_network(node.Network(int(real["slot"])), real.get("netnsDir", {}))
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


def _reap(pid: int, timeout: float = 10.0) -> None:
    """Wait for a process that is ending by itself (collecting it if it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if _start_time(pid) is None:
            return
        time.sleep(0.05)
