"""kiln.node's pure parts: address plans, configurations, and why a real node cannot run."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kiln_dev import node

CLUSTER_RANGE = ipaddress.ip_network("198.18.0.0/15")


def test_every_slot_stays_in_198_18_0_0_15_and_no_two_slots_overlap() -> None:
    seen: list[ipaddress.IPv4Network] = []
    for slot in range(node.SLOTS):
        net = node.Network(slot)
        nets = [ipaddress.ip_network(c) for c in (net.service_cidr, net.pod_range)]
        for n in nets:
            assert n.subnet_of(CLUSTER_RANGE), n
            assert not any(n.overlaps(o) for o in seen), (slot, n)
        seen += nets
        pod_range = ipaddress.ip_network(net.pod_range)
        for inside in (net.pod_cidr, net.kwok_pod_cidr):
            assert ipaddress.ip_network(inside).subnet_of(pod_range)
        assert not ipaddress.ip_network(net.pod_cidr).overlaps(ipaddress.ip_network(net.kwok_pod_cidr))
        link = ipaddress.ip_network(f"{net.host_ip}/30", strict=False)
        assert ipaddress.ip_address(net.node_ip) in link and link.subnet_of(pod_range)
        assert not link.overlaps(ipaddress.ip_network(net.pod_cidr))
        assert ipaddress.ip_address(net.kubernetes_service_ip) == ipaddress.ip_network(net.service_cidr)[1]
        assert set(net.routes) <= {net.service_cidr, net.pod_cidr} and set(net.blackholes) == {
            net.service_cidr, net.pod_range}
        assert len(net.veth) <= 15 and net.registry_host_port == 5001 + slot


def test_pods_get_no_default_route_and_no_masquerading() -> None:
    cfg = node.cni_config(node.Network(3))
    bridge = cfg["plugins"][0]
    assert bridge["ipam"]["routes"] == [{"dst": "198.18.0.0/15"}]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.19.48.0/24", "gateway": "198.19.48.1"}]]
    assert [p["type"] for p in cfg["plugins"]] == ["bridge", "portmap", "loopback"]


def test_kubelet_serves_only_authenticated_callers_and_resolves_nothing(tmp_path: Path) -> None:
    cfg = node.kubelet_config(node.Layout(tmp_path), tmp_path / "ca.crt")
    assert cfg["authentication"]["anonymous"] == {"enabled": False}
    assert cfg["authorization"] == {"mode": "Webhook"} and cfg["readOnlyPort"] == 0
    assert cfg["clusterDNS"] == [] and cfg["resolvConf"] == ""
    assert cfg["containerRuntimeEndpoint"] == f"unix://{tmp_path / 'containerd.sock'}"
    assert cfg["failCgroupV1"] is False and cfg["cgroupsPerQOS"] is True


def test_kube_proxy_leaves_host_wide_settings_alone(tmp_path: Path) -> None:
    cfg = node.kube_proxy_config(tmp_path / "kubeconfig", node.Network(0))
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["min"] == 0
    assert cfg["iptables"]["localhostNodePorts"] is False
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:") and cfg["metricsBindAddress"].startswith("127.0.0.1:")


def test_containerd_pulls_the_sandbox_image_from_the_local_registry(tmp_path: Path) -> None:
    toml = node.containerd_config(node.Layout(tmp_path), tmp_path / "cni")
    assert f'sandbox_image = "{node.PAUSE_IMAGE}"' in toml and node.PAUSE_IMAGE.startswith("127.0.0.1:5001/")
    assert "restrict_oom_score_adj = true" in toml
    assert f'address = "{tmp_path / "containerd.sock"}"' in toml
    assert 'server = "http://127.0.0.1:5001"' in node.registry_hosts()


@pytest.fixture
def capable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine where everything a real node needs is there; tests take one thing away."""
    for b in ("kubelet", "kube-proxy", "pause"):
        (tmp_path / b).touch()
    monkeypatch.setattr(node.os, "geteuid", lambda: 0)
    monkeypatch.setattr(node.shutil, "which", lambda t: f"/usr/bin/{t}")
    monkeypatch.delenv("KILN_REAL_NODE", raising=False)
    return tmp_path


def test_a_capable_machine_can_run_a_real_node(capable: Path) -> None:
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() or not all(
            (node.CNI_BIN / p).exists() for p in node.CNI_PLUGINS):
        pytest.skip("this machine itself lacks br_netfilter or the CNI plugins")
    assert node.unavailable(capable) is None


@pytest.mark.parametrize(("change", "reason"), [
    ("env", "KILN_REAL_NODE=0 asks for the simulated node only"),
    ("user", "not root: a real node needs root (network namespaces, mounts, containerd)"),
    ("containerd", "missing containerd: `make setup` as root installs them from Debian's packages"),
    ("kubelet", "not built: kubelet in"),
])
def test_why_a_real_node_cannot_run_is_said_exactly(capable: Path, monkeypatch: pytest.MonkeyPatch,
                                                     change: str, reason: str) -> None:
    if change == "env":
        monkeypatch.setenv("KILN_REAL_NODE", "0")
    elif change == "user":
        monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    elif change == "containerd":
        monkeypatch.setattr(node.shutil, "which", lambda t: None if t == "containerd" else f"/usr/bin/{t}")
    else:
        (capable / "kubelet").unlink()
    said = node.unavailable(capable)
    assert said is not None and said.startswith(reason), said
