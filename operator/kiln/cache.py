"""The operator's memory of other objects: what the reconciles read instead of calling the API.

Each index is filled at start-up by one LIST (before kopf starts its watches, so the first handler
finds it complete) and kept current from the watch events kopf delivers. kopf's own indexes do the
same job, but hold every object's handlers until all objects are indexed: with 5,000 objects that
wait cost over a minute of CPU at start-up (each indexed object wakes every waiting one) and kept a
worker, and its event, alive per object, which is what made the operator's memory grow with the
number of objects. Without them kopf's worker limit can bound how many objects are in flight.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

V = TypeVar("V")
Body = Mapping[str, Any]
Key = tuple[str, str]


class Index(Generic[V]):
    """Objects' entries under keys (several objects may share a key), by uid; thread-safe.

    ``entry`` maps an object to its (key, value), or None to keep it out of the index."""

    def __init__(self, entry: Callable[[Body], tuple[Key, V] | None]) -> None:
        self._entry = entry
        self._lock = threading.Lock()
        self._by_key: dict[Key, dict[str, V]] = {}
        self._key_of: dict[str, Key] = {}
        self._unconfirmed: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name)

    def update(self, obj: Body) -> V | None:
        """Index an object; returns the entry it had before (None if it had none)."""
        uid = str(obj["metadata"]["uid"])
        kv = self._entry(obj)
        with self._lock:
            self._unconfirmed.pop(uid, None)
            before = self._remove(uid)
            if kv is not None:
                key, value = kv
                self._by_key.setdefault(key, {})[uid] = value
                self._key_of[uid] = key
        return before

    def delete(self, uid: str) -> V | None:
        with self._lock:
            self._unconfirmed.pop(uid, None)
            return self._remove(uid)

    def observe(self, event_type: str | None, obj: Body) -> V | None:
        """Apply one watch event (kopf's ``type``: None for its initial listing); returns the
        object's entry from before it."""
        if event_type == "DELETED":
            return self.delete(str(obj["metadata"]["uid"]))
        return self.update(obj)

    def _remove(self, uid: str) -> V | None:
        key = self._key_of.pop(uid, None)
        if key is None:
            return None
        entries = self._by_key[key]
        before = entries.pop(uid, None)
        if not entries:
            del self._by_key[key]
        return before

    def get(self, key: Key) -> list[V]:
        with self._lock:
            return list(self._by_key.get(key, {}).values())

    def one(self, key: Key) -> V | None:
        return next(iter(self.get(key)), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._key_of)

    def prime(self, objs: Iterable[Body]) -> None:
        """Fill from a LIST. Entries stay unconfirmed until a watch event (kopf's own initial listing
        gives one for every object that still exists) updates them."""
        for obj in objs:
            self.update(obj)
            meta = obj["metadata"]
            with self._lock:
                self._unconfirmed[str(meta["uid"])] = (str(meta.get("namespace") or ""), str(meta["name"]))

    def sweep(self, exists: Callable[[str, str, str], bool]) -> int:
        """Drop the entries of objects deleted between the LIST and the start of the watch (no event
        has confirmed them, and ``exists(namespace, name, uid)`` says they are gone); keep the others.
        Returns how many were dropped."""
        with self._lock:
            pending = dict(self._unconfirmed)
            self._unconfirmed.clear()
        gone = [uid for uid, (ns, name) in pending.items() if not exists(ns, name, uid)]
        with self._lock:
            for uid in gone:
                self._remove(uid)
        return len(gone)


def deleted(type: str | None, **_: Any) -> bool:
    """A ``when=`` filter for kopf event handlers: the object is gone."""
    return type == "DELETED"


def pages(fetch: Callable[..., Any], size: int = 500) -> Iterator[list[dict[str, Any]]]:
    """The items of a LIST, a page at a time, read as raw JSON (no client models): ``fetch`` is a
    kubernetes client list call, taking ``limit`` and ``_continue``."""
    token = None
    while True:
        reply = json.loads(fetch(limit=size, _continue=token, _preload_content=False).data)
        yield list(reply["items"])
        token = (reply.get("metadata") or {}).get("continue")
        if not token:
            return

