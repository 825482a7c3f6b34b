"""What kopf has handled, kept in memory (kiln.controllers.runtime.ObservedDiffBase): kopf diffs what it fetches
against the object's current essence."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from kiln.controllers.runtime import ObservedDiffBase
from kiln.names import KOPF_PREFIX as PREFIX


def body(generation: int = 2, observed: int | None = 2, **annotations: str) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "kiln.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "generation": generation,
                     "resourceVersion": "7", "annotations": dict(annotations)},
        "spec": {"artifactRef": {"name": "a"}, "replicas": 1},
        "status": {"observedGeneration": observed} if observed is not None else {},
    }
    return kopf.Body(raw)


def test_first_sight_of_an_observed_object_is_a_resume() -> None:
    store = ObservedDiffBase()
    b = body(generation=2, observed=2)
    assert store.fetch(body=b) == store.build(body=b)  # no diff: kopf resumes it


def test_first_sight_of_an_unobserved_or_changed_object_is_new() -> None:
    store = ObservedDiffBase()
    assert store.fetch(body=body(generation=1, observed=0)) is None
    assert store.fetch(body=body(generation=3, observed=2)) is None  # changed while the operator was down


def test_after_handling_only_a_change_differs() -> None:
    store = ObservedDiffBase()
    b = body()
    store.store(body=b, patch=kopf.Patch(), essence=store.build(body=b))
    assert store.fetch(body=b) == store.build(body=b)
    changed = body(**{"kiln.dev/restartedAt": "2026-11-30T12:00:00Z"})
    assert store.fetch(body=changed) != store.build(body=changed)


def test_status_and_kopf_progress_records_are_not_changes() -> None:
    store = ObservedDiffBase()
    b = body()
    store.store(body=b, patch=kopf.Patch(), essence=store.build(body=b))
    raw = copy.deepcopy(dict(b))
    raw["status"] = {"observedGeneration": 2, "state": "Running"}
    raw["metadata"]["annotations"][f"{PREFIX}/workload_changed"] = '{"retries": 1}'
    raw["metadata"]["resourceVersion"] = "8"
    again = kopf.Body(raw)
    assert store.fetch(body=again) == store.build(body=again)


def test_store_writes_nothing_to_the_object() -> None:
    store = ObservedDiffBase()
    b = body()
    patch = kopf.Patch()
    store.store(body=b, patch=patch, essence=store.build(body=b))
    assert not patch


def test_forgotten_objects_are_new_again() -> None:
    store = ObservedDiffBase()
    b = body(generation=2, observed=1)
    store.store(body=b, patch=kopf.Patch(), essence=store.build(body=b))
    store.forget("u1")
    assert store.fetch(body=b) is None


def test_the_essence_is_kopfs_without_its_own_annotations() -> None:
    """The slim build (no copy of status and managedFields) gives what kopf's own build gives."""
    b = body(**{"kiln.dev/restartedAt": "now", f"{PREFIX}/workload_changed": "{}"})
    raw = copy.deepcopy(dict(b))
    raw["metadata"]["labels"] = {"app": "x"}
    raw["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    raw["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    b = kopf.Body(raw)
    store = ObservedDiffBase()
    kopfs = kopf.DiffBaseStorage.build(store, body=b)
    del kopfs["metadata"]["annotations"][f"{PREFIX}/workload_changed"]
    assert store.build(body=b) == kopfs == {
        "spec": {"artifactRef": {"name": "a"}, "replicas": 1},
        "metadata": {"labels": {"app": "x"}, "annotations": {"kiln.dev/restartedAt": "now"}}}
