"""`kiln cluster up | status | kubeconfig | down` on a second, private control plane."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kiln_dev import cluster

pytestmark = pytest.mark.skipif(bool(os.environ.get("KILN_TEST_KUBECONFIG")),
                                reason="exercises the local control plane only")


def kiln(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`kiln cluster ...` on a private cluster with the simulated node only (tests/e2e covers the real one)."""
    env = {**os.environ, "KILN_CLUSTER_DIR": str(state), "KILN_REAL_NODE": "0"}
    return subprocess.run([sys.executable, "-m", "kiln.cli", "cluster", *args], env=env, text=True,
                          capture_output=True, timeout=300)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_up_is_idempotent_and_down_stops_exactly_what_it_started(tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    r = kiln(state, "up")
    assert r.returncode == 0, r.stderr
    assert "no real node: KILN_REAL_NODE=0 asks for the simulated node only" in r.stderr
    kubeconfig = r.stdout.strip()
    assert kubeconfig == str(state / "kubeconfig")
    pids = {p["name"]: p["pid"] for p in json.loads((state / "state.json").read_text())["processes"]}
    assert set(pids) == set(cluster.COMPONENTS)
    for name in cluster.COMPONENTS:
        assert (state / "logs" / f"{name}.log").exists()

    # A second `up` is a no-op: same kubeconfig, same processes.
    r2 = kiln(state, "up")
    assert r2.returncode == 0 and r2.stdout.strip() == kubeconfig
    assert {p["name"]: p["pid"] for p in json.loads((state / "state.json").read_text())["processes"]} == pids
    assert kiln(state, "kubeconfig").stdout.strip() == kubeconfig

    st = json.loads(kiln(state, "status", "--json").stdout)
    assert st["running"] and st["apiReady"]
    assert st["realNode"] == {"unavailable": "KILN_REAL_NODE=0 asks for the simulated node only"}
    assert [(n["name"], n["kind"], n["ready"]) for n in st["nodes"]] == [("kwok-node-0", "kwok", True)]
    assert "no real node: KILN_REAL_NODE=0" in kiln(state, "status").stdout
    nodes = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "get", "nodes", "--no-headers"],
                           capture_output=True, text=True, check=True).stdout
    assert "kwok-node-0" in nodes and " Ready " in nodes

    # Everything binds to loopback only.
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    for line in listening.splitlines():
        if any(f"pid={pid}," in line for pid in pids.values()):
            local = line.split()[3]
            assert local.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")), line

    # A crash: one component dies. status says so, down still stops the rest and cleans up.
    os.kill(pids["kube-scheduler"], signal.SIGKILL)
    r3 = kiln(state, "status")
    assert r3.returncode == 3 and "EXITED" in r3.stdout
    r4 = kiln(state, "down")
    assert r4.returncode == 0, r4.stderr
    assert not any(alive(pid) for pid in pids.values())
    assert not state.exists()
    assert kiln(state, "down").returncode == 0  # nothing left: still fine


def test_up_recovers_from_stale_state(tmp_path: Path) -> None:
    """State left by a crashed run (pids that no longer exist) is cleaned up by the next `up`."""
    state = tmp_path / "cluster"
    assert kiln(state, "up").returncode == 0
    procs = json.loads((state / "state.json").read_text())["processes"]
    for p in procs:  # simulate a crash of everything: the state file stays behind
        os.kill(p["pid"], signal.SIGKILL)
    r = kiln(state, "up")
    assert r.returncode == 0, r.stderr
    assert "stale state" in r.stderr
    new = json.loads((state / "state.json").read_text())["processes"]
    assert {p["pid"] for p in new}.isdisjoint({p["pid"] for p in procs})
    assert kiln(state, "down").returncode == 0
    assert not any(alive(p["pid"]) for p in new)
