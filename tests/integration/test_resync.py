"""The periodic resync of Kiln's indexes, against the real API server.

A pod deleted while a watch re-lists after 410 Gone gets no DELETED event (kopf's re-list reports
only what is there): its entry would stay in the index, and its Workload, counting it, would never
replace it. That watch gap cannot be provoked on demand, so the operator's runtime is rebuilt here,
in-process, with its indexes primed by the same LIST the operator makes at start-up and no watch
behind them: a pod deleted then is exactly a deletion no watch event reported.
"""

from __future__ import annotations

import logging

import pytest

import kiln.kube
from kiln.controllers.runtime import Runtime
from tests.integration.test_workloads import container, create, pods, wait_running, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
log = logging.getLogger("test_resync")


def test_a_pod_deleted_unseen_leaves_the_index_and_its_workload_is_reconciled(
        kube: Kube, operator: Operator, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kiln.kube, "api_client", lambda: kube.api)  # the in-process runtime's client
    create(kube, namespace, workload("wl", inline=[container(port=None)], replicas=2))
    wait_running(kube, namespace, "wl", replicas=2)

    rt = Runtime(namespaces=(namespace,), resync_interval=0)
    rt.prime(log)
    key = (namespace, "wl")
    assert len(rt.indexes.pods.get(key)) == 2
    victim, other = pods(kube, namespace, "wl")
    kube.core.delete_namespaced_pod(victim.metadata.name, namespace, grace_period_seconds=0)
    kube.wait(lambda: all(p.metadata.uid != victim.metadata.uid for p in
                          kube.core.list_namespaced_pod(namespace, label_selector="kiln.dev/workload=wl").items),
              what=f"pod {victim.metadata.name} deleted")
    # No watch told this runtime: it still counts the deleted pod (what the operator's own indexes
    # would do after a watch gap).
    assert victim.metadata.name in {p.name for p in rt.indexes.pods.get(key)}

    reconciled: list[tuple[str, str]] = []
    dropped = rt.resync(log, reconcile=lambda _rt, ns, name, _log: reconciled.append((ns, name)))

    assert dropped == 1
    assert [p.name for p in rt.indexes.pods.get(key)] == [other.metadata.name]
    assert reconciled == [key]  # its Workload is reconciled
    assert rt.resync(log, reconcile=lambda *_: reconciled.append(("again", ""))) == 0
    assert reconciled == [key]
    # The Workload gets its pod back (here by the running operator, whose watch saw the deletion).
    wait_running(kube, namespace, "wl", replicas=2)
    assert victim.metadata.uid not in {p.metadata.uid for p in pods(kube, namespace, "wl")}


def test_a_resync_reconciles_the_workload_whose_pod_is_gone(
        kube: Kube, crds: None, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry of a pod the LIST does not have is dropped and its Workload reconciled; with the
    default reconcile (the Workloads' own), a Workload that does not exist is left alone."""
    monkeypatch.setattr(kiln.kube, "api_client", lambda: kube.api)
    rt = Runtime(namespaces=(namespace,), resync_interval=0)
    rt.prime(log)
    phantom = {"metadata": {"uid": "00000000-0000-0000-0000-000000000000", "namespace": namespace,
                            "name": "ghost-0", "labels": {"kiln.dev/workload": "ghost"}}, "status": {}}
    rt.indexes.pods.observe("ADDED", phantom)  # indexed, then deleted unseen
    asked: list[tuple[str, str]] = []
    assert rt.resync(log, reconcile=lambda _rt, ns, name, _log: asked.append((ns, name))) == 1
    assert rt.indexes.pods.get((namespace, "ghost")) == [] and asked == [(namespace, "ghost")]
    rt.indexes.pods.observe("ADDED", phantom)
    assert rt.resync(log) == 1
