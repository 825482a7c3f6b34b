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


def test_a_resync_drops_what_its_list_no_longer_has() -> None:
    """Deletions no watch event reported (a re-list after 410 Gone): gone from the LIST, dropped from
    the index, each returned with its key (whose Workload is then reconciled)."""
    idx: Index[str] = Index(entry)
    idx.observe(None, obj("1", name="kept"))
    idx.observe(None, obj("2", name="gone"))
    idx.observe(None, obj("3", name="gone-too", key="b"))
    before = idx.uids()
    assert before == {"1", "2", "3"}
    assert sorted(idx.drop_absent(before, listed=["1"])) == [("2", ("ns", "a"), "gone"),
                                                             ("3", ("ns", "b"), "gone-too")]
    assert idx.get(("ns", "a")) == ["kept"] and idx.get(("ns", "b")) == [] and len(idx) == 1
    assert idx.drop_absent(idx.uids(), listed=["1"]) == []  # nothing more to drop


def test_a_resync_keeps_what_was_indexed_after_its_list_began() -> None:
    """A pod created while the LIST runs (not in it) and already indexed from its watch event stays."""
    idx: Index[str] = Index(entry)
    idx.observe(None, obj("1", name="old"))
    before = idx.uids()
    idx.observe("ADDED", obj("2", name="new"))  # during the LIST, which did not see it
    assert idx.drop_absent(before, listed=["1"]) == []
    assert sorted(idx.get(("ns", "a"))) == ["new", "old"]


def test_a_resync_leaves_what_the_watch_changed_meanwhile() -> None:
    """Deleted by a watch event during the LIST: not dropped twice (nor returned); updated during it:
    the watch's newer entry stays."""
    idx: Index[str] = Index(entry)
    idx.observe(None, obj("1", name="deleted"))
    idx.observe(None, obj("2", name="v1"))
    before = idx.uids()
    idx.observe("DELETED", obj("1", name="deleted"))
    idx.observe("MODIFIED", obj("2", name="v2"))
    assert idx.drop_absent(before, listed=["2"]) == []
    assert idx.get(("ns", "a")) == ["v2"]


def test_a_resync_drops_primed_entries_the_sweep_would_check() -> None:
    """A primed entry dropped by a resync is no longer pending for the start-up sweep."""
    idx: Index[str] = Index(entry)
    idx.prime([obj("1", name="gone")])
    assert idx.drop_absent(idx.uids(), listed=[]) == [("1", ("ns", "a"), "gone")]
    asked: list[str] = []
    assert idx.sweep(lambda ns, name, uid: asked.append(name) or True) == 0
    assert asked == []
