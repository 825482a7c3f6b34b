"""`kiln cluster up` with a real node, then `down`, on a second, private cluster (the session's own keeps
running: each cluster's node has a slot of its own): the node works, confined to its ranges, and
nothing it made is left on this machine afterwards."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kiln_dev import node
from tests.e2e.conftest import answer

pytestmark = pytest.mark.cluster


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def host_state() -> dict[str, Any]:
    """What a cluster could change on this host: interfaces, routes, network namespaces, firewall rules,
    mounts, this process's child cgroups, listening sockets."""
    own = [Path("/sys/fs/cgroup") / h.name / h.own.lstrip("/") for h in node.hierarchies()]
    return {
        "links": sorted(line.split(": ")[1].split("@")[0] for line in sh("ip", "-o", "link").splitlines()),
        "routes": sorted(line.strip() for v in ("-4", "-6")
                         for line in sh("ip", v, "route", "show", "table", "all").splitlines()),
        "netns": sorted(line.split()[0] for line in sh("ip", "netns", "list").splitlines()),
        "iptables": sorted(line for line in sh("iptables-save").splitlines() if not line.startswith(("#", ":"))),
        "mounts": sorted(" ".join(line.split()[:3]) for line in Path("/proc/self/mounts").read_text().splitlines()),
        "cgroups": sorted(str(c) for d in own for c in d.iterdir() if c.is_dir()),
        "listening": sorted(line.split()[3] for line in sh("ss", "-Hltnu").splitlines()),
    }


def kiln(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln.cli", "cluster", *args], text=True, capture_output=True,
                          env={**os.environ, "KILN_CLUSTER_DIR": str(state)}, timeout=600)


def test_a_second_cluster_with_a_real_node_leaves_nothing_behind(tmp_path: Path, real_node: dict[str, Any],
                                                                registry_images: dict[str, str]) -> None:
    before = host_state()
    state = tmp_path / "cluster"
    r = kiln(state, "up")
    assert r.returncode == 0, r.stderr
    try:
        st = json.loads(kiln(state, "status", "--json").stdout)
        assert st["running"], st
        slot = st["realNode"]["slot"]
        assert slot != real_node["slot"]
        net = node.Network(slot)
        assert {(n["name"], n["kind"], n["ready"]) for n in st["nodes"]} == {
            ("kwok-node-0", "kwok", True), ("kiln-real", "real", True)}
        assert st["realNode"]["registry"] == f"127.0.0.1:{5001 + slot}"

        # A real pod, from the registry, answering on its ClusterIP in this slot's range.
        kc = ["kubectl", f"--kubeconfig={r.stdout.strip()}"]
        sh(*kc, "run", "scorer", "--image=127.0.0.1:5001/kiln/scorer:v1", "--port=8080", "--expose")
        sh(*kc, "wait", "--for=condition=Ready", "pod/scorer", "--timeout=90s")
        ip = sh(*kc, "get", "service", "scorer", "-o", "jsonpath={.spec.clusterIP}")
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(net.service_cidr), ip
        assert sh(*kc, "get", "pod", "scorer", "-o", "jsonpath={.spec.nodeName}") == "kiln-real"
        expected = {"model": "scorer", "version": "v1", "score": 2.0}
        deadline = time.monotonic() + 30  # kube-proxy programs the new Service within a moment
        while answer(f"http://{ip}:8080/predict", {"features": [4]}) != expected:
            assert time.monotonic() < deadline, f"{ip}:8080 does not answer {expected}"
            time.sleep(0.2)

        # On the host: only this slot's link and routes; no firewall rule, no mount, nothing listening
        # anywhere but on loopback (the node's own rules and sockets live in its namespaces).
        during = host_state()
        assert set(during["links"]) - set(before["links"]) == {net.veth}
        assert set(during["netns"]) - set(before["netns"]) == {net.netns}
        added_routes = set(during["routes"]) - set(before["routes"])
        for cidr in net.blackholes:
            assert f"blackhole {cidr} metric {node.BLACKHOLE_METRIC}" in added_routes, added_routes
        for cidr in net.routes:
            assert any(r.startswith(f"{cidr} via {net.node_ip} dev {net.veth}") for r in added_routes), added_routes
        assert during["iptables"] == before["iptables"]
        assert set(during["mounts"]) - set(before["mounts"]) <= {f"nsfs /run/netns/{net.netns} nsfs",
                                                               "tmpfs /run/netns tmpfs"}, during["mounts"]
        for addr in set(during["listening"]) - set(before["listening"]):
            assert addr.startswith("127.0.0.1:"), addr
    finally:
        down = kiln(state, "down")
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert host_state() == before
