"""Kiln's own watch of its pods (kiln.controllers.podwatch), against the real API server: built here
in-process (the operator's is covered by every Workload test) to provoke what a running operator
cannot be made to meet on demand: a watch whose resourceVersion has expired (410 Gone), and pods
changed or deleted while no watch ran."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import kiln.kube
from kiln.controllers.cache import Indexes
from kiln.controllers.podwatch import PodWatch
from tests.kube import Kube

pytestmark = pytest.mark.cluster
LOG: Any = logging.getLogger("test_podwatch")


def pod(name: str, workload: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kiln.dev/workload": workload}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def __call__(self, ns: str, name: str) -> None:
        with self.changed:
            self.seen.append((ns, name))
            self.changed.notify_all()

    def wait_for(self, key: tuple[str, str], count: int = 1, timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.seen.count(key) >= count, timeout), (key, self.seen)


@pytest.fixture
def watch(kube: Kube, namespace: str,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PodWatch, Calls, ThreadPoolExecutor]]:
    monkeypatch.setattr(kiln.kube, "api_client", lambda: kube.api)  # the in-process watch's client
    calls = Calls()
    w = PodWatch(Indexes.empty().pods, (namespace,), calls, LOG, 60)
    with ThreadPoolExecutor(4) as executor:
        w.prime()
        yield w, calls, executor
        w.stop()


def ready(kube: Kube, ns: str, name: str) -> bool:
    st = kube.core.read_namespaced_pod(name, ns).status
    return any(c.type == "Ready" and c.status == "True" for c in st.conditions or [])


def test_readiness_and_deletion_reach_the_workload_through_the_watch(
        kube: Kube, namespace: str, watch: tuple[PodWatch, Calls, ThreadPoolExecutor]) -> None:
    w, calls, executor = watch
    w.start(executor)
    kube.core.create_namespaced_pod(namespace, pod("p", "wl"))
    kube.wait(lambda: ready(kube, namespace, "p"), what="pod p Ready")
    calls.wait_for((namespace, "wl"))
    assert [v.ready for v in w.index.get((namespace, "wl"))] == [True]
    kube.core.delete_namespaced_pod("p", namespace, grace_period_seconds=0)
    calls.wait_for((namespace, "wl"), count=2)
    kube.wait(lambda: w.index.get((namespace, "wl")) == [], what="the pod out of the index")


def test_an_expired_watch_lists_again_and_reconciles_what_changed_unseen(
        kube: Kube, namespace: str, watch: tuple[PodWatch, Calls, ThreadPoolExecutor]) -> None:
    """Pods created, made Ready and deleted while no watch ran; the watch then starts from a
    resourceVersion the API server no longer has (410 Gone): it lists again, the index is what the
    cluster has, and each Workload whose pods changed is reconciled."""
    w, calls, executor = watch
    kube.core.create_namespaced_pod(namespace, pod("gone", "a"))
    kube.wait(lambda: ready(kube, namespace, "gone"), what="pod gone Ready")
    w.prime()  # the index has "gone", Ready
    kube.core.delete_namespaced_pod("gone", namespace, grace_period_seconds=0)
    kube.core.create_namespaced_pod(namespace, pod("new", "b"))
    kube.wait(lambda: ready(kube, namespace, "new"), what="pod new Ready")
    kube.wait(lambda: not [p for p in kube.core.list_namespaced_pod(namespace).items if p.metadata.name == "gone"],
              what="pod gone deleted")
    w.versions[namespace] = "1"  # long compacted: the API server answers 410 Gone
    w.start(executor)
    calls.wait_for((namespace, "a"))
    calls.wait_for((namespace, "b"))
    assert w.index.get((namespace, "a")) == []
    assert [v.ready for v in w.index.get((namespace, "b"))] == [True]
    assert int(w.versions[namespace]) > 1, "watching again, from the new listing"
    # And it goes on watching.
    kube.core.delete_namespaced_pod("new", namespace, grace_period_seconds=0)
    kube.wait(lambda: w.index.get((namespace, "b")) == [], what="the deletion seen by the new watch")
