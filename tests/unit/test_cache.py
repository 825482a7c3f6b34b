"""kiln.controllers.cache.Index: what the reconciles read instead of calling the API."""

from __future__ import annotations

from typing import Any

from kiln.controllers.cache import Index, pages


def obj(uid: str, ns: str = "ns", name: str = "x", key: str = "a") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": ns, "name": name, "labels": {"k": key}}}


def entry(o: Any) -> tuple[tuple[str, str], str] | None:
    labels = o["metadata"]["labels"]
    return ((o["metadata"]["namespace"], labels["k"]), o["metadata"]["name"]) if labels.get("k") else None


def test_entries_by_key_follow_updates_and_deletions() -> None:
    idx: Index[str] = Index(entry)
    idx.observe(None, obj("1", name="p"))
    idx.observe("ADDED", obj("2", name="q"))
    assert sorted(idx.get(("ns", "a"))) == ["p", "q"]
    idx.observe("MODIFIED", obj("1", name="p", key="b"))  # moved to another key
    assert idx.get(("ns", "a")) == ["q"] and idx.one(("ns", "b")) == "p"
    idx.observe("DELETED", obj("2", name="q"))
    assert idx.get(("ns", "a")) == [] and idx.one(("ns", "a")) is None
    assert len(idx) == 1


def test_each_event_returns_the_entry_it_replaced_and_the_new_one() -> None:
    """What the pod handler compares a pod's new state with (did anything that matters change?)."""
    idx: Index[str] = Index(entry)
    assert idx.observe("ADDED", obj("1", name="p")) == (None, "p")
    assert idx.observe("MODIFIED", obj("1", name="p2")) == ("p", "p2")
    assert idx.observe("DELETED", obj("1", name="p2")) == ("p2", None)
    assert idx.observe("DELETED", obj("1", name="p2")) == (None, None)


def test_an_object_without_an_entry_is_left_out() -> None:
    idx: Index[str] = Index(entry)
    idx.observe("ADDED", obj("1", name="p"))
    idx.observe("MODIFIED", obj("1", name="p", key=""))
    assert len(idx) == 0 and idx.get(("ns", "a")) == []


def test_the_sweep_drops_primed_entries_of_objects_gone() -> None:
    idx: Index[str] = Index(entry)
    idx.prime([obj("1", name="kept"), obj("2", name="gone"), obj("3", name="slow")])
    idx.observe(None, obj("1", name="kept"))  # kopf's initial listing has it
    asked: list[str] = []

    def exists(ns: str, name: str, uid: str) -> bool:
        asked.append(name)
        return name == "slow"  # not yet seen by a watch, but there

    assert idx.sweep(exists) == 1
    assert sorted(asked) == ["gone", "slow"]  # confirmed entries are not checked
    assert sorted(idx.get(("ns", "a"))) == ["kept", "slow"]
    assert idx.sweep(exists) == 0  # once


def test_pages_follow_the_continue_token() -> None:
    calls: list[Any] = []

    class Reply:
        def __init__(self, data: bytes) -> None:
            self.data = data

    def fetch(limit: int, _continue: str | None, _preload_content: bool) -> Reply:
        calls.append((limit, _continue))
        if _continue is None:
            return Reply(b'{"metadata": {"continue": "t1"}, "items": [{"n": 1}, {"n": 2}]}')
        return Reply(b'{"metadata": {"continue": ""}, "items": [{"n": 3}]}')

    assert list(pages(fetch, size=2)) == [[{"n": 1}, {"n": 2}], [{"n": 3}]]
    assert calls == [(2, None), (2, "t1")]
