"""The local cluster's real node: containerd, runc, CNI, kubelet and kube-proxy on this machine.

The node lives in namespaces of its own, the way kind's node container does, so that nothing it does
reaches the host and ``kiln cluster down`` leaves nothing behind:

- a **network namespace** ``kiln-<slot>`` linked to the host by one veth pair. Pods sit on a bridge
  inside it; kube-proxy's rules, the bridge, the pods' veths and every iptables rule live there. It
  has no default route: a packet to anything but the host's end of the link or the cluster's own
  ranges is dropped inside it. Pods may not open connections to the host at all.
- a **pid and mount namespace**, whose first process is :func:`supervise`: it starts the node's
  processes and, when it exits, the kernel ends every process left in it (shims and containers) and
  drops every mount made in it (overlay root filesystems, sandbox ``shm``, secrets, network
  namespace handles).

The node reaches the API server and the image registry, which listen on the host's 127.0.0.1 only,
through two unix sockets (a ``socat`` pair each): inside the node they answer on 127.0.0.1:6443 (and on
the node's address, the endpoint of the ``kubernetes`` Service) and on port 5001 (127.0.0.1 for
containerd, the node's address for pods).

Addresses come from 198.18.0.0/15 (reserved for benchmarking, never routed), one /20 of Services and
one /20 of pods per slot, so that several local clusters (a developer's, a test's private one) can
each have a node. The host gets a blackhole route for both, and routes into the node for the live part.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = "kiln-real"
LABEL = "kiln.dev/node"
SLOTS = 16
REGISTRY_PORT = 5001  # inside the node, for every slot; on the host: 5001 + slot
APISERVER_PORT = 6443  # inside the node
PAUSE_IMAGE = f"127.0.0.1:{REGISTRY_PORT}/kiln/pause:3.10.2"
CNI_BIN = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "socat", "ip", "iptables", "nsenter", "unshare",
         "mount", "sysctl")
BRIDGE = "kiln-br"
BLACKHOLE_METRIC = "4242"  # the host's blackhole routes lose to the routes into the node (metric 0)


@dataclass(frozen=True)
class Network:
    """A slot's addresses. Slot s owns 198.18.16s.0/20 (Services) and 198.19.16s.0/20 (pods and link)."""

    slot: int

    @property
    def netns(self) -> str:
        return f"kiln-{self.slot}"

    @property
    def veth(self) -> str:  # the host's end of the link
        return f"kiln{self.slot}"

    @property
    def service_cidr(self) -> str:
        return f"198.18.{16 * self.slot}.0/20"

    @property
    def kubernetes_service_ip(self) -> str:  # the API server takes the range's first address
        return f"198.18.{16 * self.slot}.1"

    @property
    def pod_range(self) -> str:  # everything pods of this cluster can have
        return f"198.19.{16 * self.slot}.0/20"

    @property
    def pod_cidr(self) -> str:  # the real node's pods
        return f"198.19.{16 * self.slot}.0/24"

    @property
    def pod_gateway(self) -> str:
        return f"198.19.{16 * self.slot}.1"

    @property
    def kwok_pod_cidr(self) -> str:  # simulated pods: addresses only, nothing answers there
        return f"198.19.{16 * self.slot + 8}.0/22"

    @property
    def host_ip(self) -> str:
        return f"198.19.{16 * self.slot + 15}.253"

    @property
    def node_ip(self) -> str:
        return f"198.19.{16 * self.slot + 15}.254"

    @property
    def registry_host_port(self) -> int:
        return REGISTRY_PORT + self.slot

    @property
    def blackholes(self) -> tuple[str, str]:
        return (self.service_cidr, self.pod_range)

    @property
    def routes(self) -> tuple[str, str]:  # on the host, via the node
        return (self.service_cidr, self.pod_cidr)


def log(msg: str) -> None:
    print(f"[kiln node] {msg}", file=sys.stderr, flush=True)


def unavailable(bindir: Path) -> str | None:
    """Why a real node cannot run here (None when it can): the reason ``kiln cluster up`` prints."""
    if os.environ.get("KILN_REAL_NODE", "1") == "0":
        return "KILN_REAL_NODE=0 asks for the simulated node only"
    if os.geteuid() != 0:
        return "not root: a real node needs root (network namespaces, mounts, containerd)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs (modprobe overlay)"
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        return "the kernel's br_netfilter is not loaded (modprobe br_netfilter)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [f"{CNI_BIN}/{p}" for p in CNI_PLUGINS if not (CNI_BIN / p).exists()]
    if missing:
        return (f"missing {', '.join(missing)}: `make setup` as root installs them from Debian's packages "
                "(containerd runc containernetworking-plugins iptables socat)")
    missing = [b for b in ("kubelet", "kube-proxy", "pause") if not (bindir / b).exists()]
    if missing:
        return f"not built: {', '.join(missing)} in {bindir} (`make setup`)"
    return None


# --- host side: the link, routes and the node's namespace ---------------------------------------


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r


NETNS_DIR = Path("/run/netns")


def netns_dir_state() -> dict[str, bool]:
    """Whether /run/netns exists and is a mount point: the first `ip netns add` makes both, and the
    last namespace's removal undoes neither (:func:`teardown_network` does, when `up` made them)."""
    return {"existed": NETNS_DIR.exists(), "mounted": _mountpoint(NETNS_DIR)}


def _mountpoint(path: Path) -> bool:
    """(os.path.ismount misses a directory bind-mounted onto itself, as `ip netns add` does.)"""
    return any(line.split()[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def claim_slot() -> Network:
    """The first free slot, claimed by creating its network namespace (atomic: `ip netns add` fails when
    it exists)."""
    for slot in range(SLOTS):
        net = Network(slot)
        r = _run("ip", "netns", "add", net.netns, check=False)
        if r.returncode == 0:
            return net
        if "File exists" not in r.stderr:
            raise RuntimeError(f"ip netns add {net.netns} failed: {r.stderr.strip()}")
    raise RuntimeError(f"all {SLOTS} real-node slots are taken (network namespaces kiln-0..kiln-{SLOTS - 1})")


def setup_network(net: Network) -> None:
    """The link, the node's routes and firewall, and the host's routes into it (the namespace exists)."""
    ns = ("ip", "-n", net.netns)
    for cidr in net.blackholes:  # first: until the node answers, nothing for these ranges leaves
        _run("ip", "route", "add", "blackhole", cidr, "metric", BLACKHOLE_METRIC)
    _run("ip", "link", "add", net.veth, "type", "veth", "peer", "name", "eth0", "netns", net.netns)
    _run("ip", "addr", "add", f"{net.host_ip}/30", "dev", net.veth)
    _run("ip", "link", "set", net.veth, "up")
    _run(*ns, "link", "set", "lo", "up")
    _run(*ns, "addr", "add", f"{net.node_ip}/30", "dev", "eth0")
    _run(*ns, "link", "set", "eth0", "up")
    for cidr in net.blackholes:  # inside: refused at once (ICMP unreachable) rather than left to time out
        _run(*ns, "route", "add", "unreachable", cidr)
    for cidr in net.routes:
        _run("ip", "route", "add", cidr, "via", net.node_ip)
    inside = ("ip", "netns", "exec", net.netns)
    _run(*inside, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
         "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    # Pods answer the host but never open a connection to it (the host's end of the link is the only
    # address outside the cluster a pod could route to).
    _run(*inside, "iptables", "-w", "-N", "KILN-NODE")
    for proto, how in (("tcp", "tcp-reset"), ("all", "icmp-port-unreachable")):
        _run(*inside, "iptables", "-w", "-A", "KILN-NODE", "-i", BRIDGE, "-o", "eth0", "-p", proto, "-m",
             "conntrack", "--ctstate", "NEW", "-j", "REJECT", "--reject-with", how)
    _run(*inside, "iptables", "-w", "-I", "FORWARD", "1", "-j", "KILN-NODE")


def teardown_network(net: Network, netns_dir_before: dict[str, bool], timeout: float = 30.0) -> None:
    """Undo :func:`setup_network` and remove the namespace; call once no process is left in it. The
    namespace's interfaces, rules and the host's routes through it go with it."""
    _run("ip", "netns", "del", net.netns, check=False)
    if os.path.isdir(NETNS_DIR) and not any(NETNS_DIR.iterdir()):  # no other namespace uses it
        if not netns_dir_before.get("mounted", True) and _mountpoint(NETNS_DIR):
            _run("umount", str(NETNS_DIR), check=False)
        if not netns_dir_before.get("existed", True):
            with contextlib.suppress(OSError):
                NETNS_DIR.rmdir()
    _run("ip", "link", "del", net.veth, check=False)
    deadline = time.monotonic() + timeout  # the kernel frees a namespace asynchronously
    while time.monotonic() < deadline and _run("ip", "link", "show", net.veth, check=False).returncode == 0:
        time.sleep(0.1)
    for cidr in net.routes:
        _run("ip", "route", "del", cidr, "via", net.node_ip, check=False)
    for cidr in net.blackholes:
        _run("ip", "route", "del", "blackhole", cidr, "metric", BLACKHOLE_METRIC, check=False)


# --- cgroups: the node's own subtree of this process's cgroups ----------------------------------


@dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup hierarchy: /sys/fs/cgroup/<name>, v1 (its subsystems in ``options``) or v2."""

    name: str
    fstype: str  # cgroup | cgroup2
    options: str  # cgroup v1: the subsystems, or name=...; v2: ""
    own: str  # this process's cgroup in it


def hierarchies() -> list[Hierarchy]:
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, post = line.split(" - ", 1)
        mountpoint = pre.split()[4]
        fstype, _, superopts = post.split()[:3]
        if fstype not in ("cgroup", "cgroup2") or not mountpoint.startswith("/sys/fs/cgroup/"):
            continue
        opts = ",".join(o for o in superopts.split(",") if o not in ("rw", "ro")) if fstype == "cgroup" else ""
        # /proc/self/cgroup names v1 hierarchies by their subsystems (and name=), v2 by "".
        key = ",".join(o for o in opts.split(",") if (o and "=" not in o) or o.startswith("name="))
        if key in own:
            found.append(Hierarchy(mountpoint.removeprefix("/sys/fs/cgroup/"), fstype, opts, own[key]))
    return found


def cgroup_dirs(net: Network) -> list[Path]:
    """The node's cgroup in every hierarchy: a child of this process's own, ``kiln-<slot>``."""
    return [Path("/sys/fs/cgroup") / h.name / h.own.lstrip("/") / net.netns for h in hierarchies()]


def create_cgroups(dirs: list[Path]) -> None:
    for d in dirs:
        d.mkdir()
        for knob in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset is empty: no process may join it
            if (d / knob).exists():
                (d / knob).write_text((d.parent / knob).read_text())


def join_cgroups(dirs: list[Path]) -> None:
    """Move this process into the node's cgroups (run in the node's first process before exec)."""
    for d in dirs:
        (d / "cgroup.procs").write_text(str(os.getpid()))


def remove_cgroups(dirs: list[Path], timeout: float = 30.0) -> None:
    """Remove the node's cgroup subtrees, deepest first, once the processes in them have gone."""
    deadline = time.monotonic() + timeout
    for d in dirs:
        while d.exists():
            try:
                for sub, _, _ in sorted(os.walk(d), key=lambda w: -len(Path(w[0]).parts)):
                    os.rmdir(sub)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


# --- configuration files ------------------------------------------------------------------------


class Layout:
    """Where the node keeps its files, under the cluster's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.containerd_config, self.containerd_socket, self.apiserver_socket, self.registry_socket, \
            self.supervisor_config = (root / n for n in ("containerd.toml", "containerd.sock", "apiserver.sock",
                                                         "registry.sock", "supervisor.json"))


def containerd_config(layout: Layout, cni_dir: Path) -> str:
    r = layout.root
    return f"""\
version = 2
root = "{r / 'containerd'}"
# The node's own /run: a tmpfs of its mount namespace (shim sockets, sandbox state).
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{layout.containerd_socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{r / 'containerd-opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine's root lacks CAP_SYS_RESOURCE: runc may not lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{r / 'certs.d'}"
"""


def registry_hosts() -> str:
    """containerd's hosts.toml for the local registry: plain HTTP on the node's loopback."""
    return f"""\
server = "http://127.0.0.1:{REGISTRY_PORT}"
[host."http://127.0.0.1:{REGISTRY_PORT}"]
  capabilities = ["pull", "resolve", "push"]
"""


def cni_config(net: Network) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "kiln", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": net.pod_cidr, "gateway": net.pod_gateway}]],
                  # No default route: a pod's connection to any address outside the cluster's ranges
                  # fails at once in the pod (ENETUNREACH), and no packet for it is ever sent.
                  "routes": [{"dst": "198.18.0.0/15"}], "dataDir": "/run/cni-ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "loopback"},
    ]}


def kubelet_config(layout: Layout, ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "0.0.0.0",  # inside the node's network namespace
        "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # This host: cgroup v1, no systemd, no CAP_SYS_RESOURCE, maybe swap.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs",
        # Pods' cgroups in the node's cgroup namespace: under the host's .../kiln-<slot>, which `down` removes.
        "cgroupsPerQOS": True, "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "podLogsDir": str(layout.root / "pod-logs"),
        # No cluster DNS, and no host resolver inside pods: nothing in a pod resolves outside names.
        "clusterDNS": [], "resolvConf": "",
        "serializeImagePulls": False,
        "evictionHard": {"memory.available": "0%", "nodefs.available": "0%", "nodefs.inodesFree": "0%",
                         "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "rotateCertificates": False, "serverTLSBootstrap": False,
    }


def kube_proxy_config(kubeconfig: Path, net: Network) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME, "mode": "iptables", "clusterCIDR": net.pod_cidr,
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        # Host-wide conntrack settings stay as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def write_config(layout: Layout, net: Network, *, bindir: Path, ca: Path, kubeconfigs: dict[str, Path],
                 logs: Path) -> None:
    """Every file the node needs, and the supervisor's plan (see :func:`supervise`)."""
    r = layout.root
    cni_dir = r / "cni"
    for d in (r, cni_dir, r / "certs.d" / f"127.0.0.1:{REGISTRY_PORT}", r / "pod-logs"):
        d.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout, cni_dir))
    (r / "certs.d" / f"127.0.0.1:{REGISTRY_PORT}" / "hosts.toml").write_text(registry_hosts())
    (cni_dir / "10-kiln.conflist").write_text(json.dumps(cni_config(net), indent=2))
    (r / "kubelet").mkdir(exist_ok=True)
    (r / "kubelet.yaml").write_text(json.dumps(kubelet_config(layout, ca), indent=2))
    (r / "kube-proxy.yaml").write_text(json.dumps(kube_proxy_config(kubeconfigs["kube-proxy"], net), indent=2))
    relay = "socat"
    plan = {"processes": [
        {"name": "relay-apiserver", "argv": [
            relay, f"TCP-LISTEN:{APISERVER_PORT},fork,reuseaddr", f"UNIX-CONNECT:{layout.apiserver_socket}"]},
        # On every address of the node: containerd pulls at 127.0.0.1:5001, and pods (an operator installed
        # with the chart resolving image digests) reach it at the node's address.
        {"name": "relay-registry", "argv": [
            relay, f"TCP-LISTEN:{REGISTRY_PORT},fork,reuseaddr",
            f"UNIX-CONNECT:{layout.registry_socket}"]},
        {"name": "containerd", "argv": ["containerd", "--config", str(layout.containerd_config)],
         "ready": str(layout.containerd_socket)},
        {"name": "kubelet", "argv": [
            str(bindir / "kubelet"), f"--config={r / 'kubelet.yaml'}", f"--kubeconfig={kubeconfigs['kubelet']}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={net.node_ip}",
            f"--node-labels={LABEL}=real", "--v=1"]},
        {"name": "kube-proxy", "argv": [str(bindir / "kube-proxy"), f"--config={r / 'kube-proxy.yaml'}", "--v=1"]},
    ], "logs": str(logs), "kubeletDir": str(r / "kubelet"),
        "cgroups": [{"name": h.name, "fstype": h.fstype, "options": h.options} for h in hierarchies()]}
    layout.supervisor_config.write_text(json.dumps(plan, indent=2))


def supervisor_argv(layout: Layout, net: Network) -> list[str]:
    """The node's first process: in the node's network namespace, in new pid and mount namespaces
    (``--kill-child``: if this wrapper dies, the namespace's first process, and so all of it, dies too)."""
    return ["nsenter", f"--net=/run/netns/{net.netns}", "--",
            "unshare", "--pid", "--mount", "--cgroup", "--propagation", "private", "--mount-proc", "--kill-child",
            "--", sys.executable, "-m", "kiln_dev.node", str(layout.supervisor_config)]


# --- inside the node: the first process of its pid namespace -----------------------------------------


def _prepare_mounts(kubelet_dir: Path, cgroups: list[dict[str, str]]) -> None:
    """A private /run; a sysfs of the node's network namespace, with the cgroup hierarchies mounted
    afresh in it, so that they show the node's cgroup namespace (its root: the host's
    ``.../kiln-<slot>``): runc and kubelet then make every cgroup inside the node's subtree; mounts
    shared within the namespace, as kubelet expects."""
    cmds = [
        ["mount", "-t", "tmpfs", "-o", "mode=755", "kiln-node-run", "/run"],
        ["mkdir", "-p", "/run/netns"],
        ["mount", "-t", "sysfs", "sysfs", "/sys"],
        ["mount", "-t", "tmpfs", "-o", "mode=755", "cgroup", "/sys/fs/cgroup"],
    ]
    for h in cgroups:
        cmds.append(["mkdir", "-p", f"/sys/fs/cgroup/{h['name']}"])
        opts = ["-o", h["options"] or "none"] if h["fstype"] == "cgroup" else []
        cmds.append(["mount", "-t", h["fstype"], *opts, h["fstype"], f"/sys/fs/cgroup/{h['name']}"])
    cmds += [
        # kubelet keeps some files under /var/lib/kubelet whatever its --root-dir (device plugins'
        # sockets, its serving certificate): there, in the node, /var/lib/kubelet is the state directory's.
        ["mount", "-t", "tmpfs", "-o", "mode=755", "kiln-node-var-lib", "/var/lib"],
        ["mkdir", "-p", "/var/lib/kubelet"],
        ["mount", "--bind", str(kubelet_dir), "/var/lib/kubelet"],
        ["mount", "--make-rshared", "/"],
    ]
    for argv in cmds:
        _run(*argv)


def _wait_for_socket(path: str, failed: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if failed():
            raise RuntimeError(f"a process exited before {path} appeared")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not appear in {timeout:.0f}s")


def supervise(plan_path: Path) -> int:
    """Run the node's processes in order; stop them in reverse on SIGTERM. Returns when one of them
    exits (the node is broken) or after a stop; the kernel then ends whatever is left in the namespace.
    As the namespace's first process it also collects every orphan re-parented to it."""
    plan = json.loads(plan_path.read_text())
    logs = Path(plan["logs"])
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _prepare_mounts(Path(plan["kubeletDir"]), plan["cgroups"])
    running: dict[int, str] = {}  # pid -> name, in start order
    code = 0

    def reap() -> None:
        nonlocal stopping, code
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            name = running.pop(pid, None)
            if name is not None and not stopping:
                tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-8:]
                log(f"{name} exited ({os.waitstatus_to_exitcode(status)}): stopping the node. "
                    f"The end of its log ({logs / name}.log):\n  " + "\n  ".join(tail))
                stopping, code = True, 1

    def reaped_a_failure() -> bool:
        reap()
        return stopping

    try:
        for spec in plan["processes"]:
            if stopping:
                break
            with open(logs / f"{spec['name']}.log", "ab") as out:
                pid = subprocess.Popen(spec["argv"], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL).pid
            running[pid] = spec["name"]
            log(f"started {spec['name']} (pid {pid} in the node)")
            if "ready" in spec:
                _wait_for_socket(spec["ready"], reaped_a_failure)
        while not stopping:
            reap()
            time.sleep(0.2)
    except Exception as e:  # a broken start: say why, then stop what started
        log(f"start failed: {e}")
        code = 1
    stopping = True
    for pid, name in reversed(list(running.items())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid in running and time.monotonic() < deadline:
            reap()
            time.sleep(0.05)
        if pid in running:
            log(f"{name} did not stop in 10s: killed")
            os.kill(pid, signal.SIGKILL)
    return code


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1])))
