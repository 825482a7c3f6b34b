"""The operator's memory of other objects: what the reconciles read instead of calling the API.

Each index is filled at start-up by one LIST (before kopf starts its watches, so the first handler
finds it complete) and kept current from the watch events kopf delivers. Why not kopf's own indexes:
docs/architecture.md.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import pydantic

from kiln import names
from kiln.api.digest import registered_images, spec_digest
from kiln.api.models import ArtifactSpec, ImageStatus, problems

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
        return self._put(str(obj["metadata"]["uid"]), self._entry(obj))

    def _put(self, uid: str, kv: tuple[Key, V] | None) -> V | None:
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

    def observe(self, event_type: str | None, obj: Body) -> tuple[V | None, V | None]:
        """Apply one watch event (kopf's ``type``: None for its initial listing); returns the object's
        entry from before it and after it."""
        uid = str(obj["metadata"]["uid"])
        if event_type == "DELETED":
            return self.delete(uid), None
        kv = self._entry(obj)
        return self._put(uid, kv), (kv[1] if kv is not None else None)

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

    def prime(self, objs: Iterable[Body], confirmed: bool = False) -> None:
        """Fill from a LIST. Entries stay unconfirmed until a watch event (kopf's own initial listing
        gives one for every object that still exists) updates them; ``confirmed``: a watch goes on from
        this LIST's resourceVersion, so nothing can be missed."""
        for obj in objs:
            self.update(obj)
            meta = obj["metadata"]
            if not confirmed:
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

    def uids(self, namespace: str | None = None) -> frozenset[str]:
        """The objects indexed now (in one namespace, or all): what a LIST started after this must find
        again."""
        with self._lock:
            if namespace is None:
                return frozenset(self._key_of)
            return frozenset(uid for uid, key in self._key_of.items() if key[0] == namespace)

    def drop_absent(self, before: Iterable[str], listed: Iterable[str]) -> list[tuple[str, Key, V]]:
        """A resync: drop the entries of objects that were indexed ``before`` a LIST began and are not
        in it (``listed``: the uids it returned), the deletions no watch event reported (a watch that
        re-lists after 410 Gone emits no DELETED for what vanished meanwhile). Entries indexed after the
        LIST began (a watch event may bring an object newer than the LIST) are kept; so are those a
        watch event removed meanwhile. Returns the dropped (uid, key, entry)s."""
        gone = set(before).difference(listed)
        dropped: list[tuple[str, Key, V]] = []
        with self._lock:
            for uid in gone:
                key = self._key_of.get(uid)
                if key is None:  # deleted by a watch event meanwhile
                    continue
                value = self._by_key[key][uid]
                self._unconfirmed.pop(uid, None)
                self._remove(uid)
                dropped.append((uid, key, value))
        return dropped


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



# --- what is indexed of each kind ----------------------------------------------------------------

# Container states a kubelet reports for a pod that will not start by itself.
BROKEN = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                    "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


class PodView(NamedTuple):
    """What a Workload's reconcile needs of one of its pods."""

    name: str
    revision: str | None
    digest: str | None  # its label: the first 32 hex characters of the spec digest
    ready: bool
    phase: str | None
    deleting: bool
    broken: str | None  # "container app: CrashLoopBackOff (back-off restarting failed container)"
    owner: str | None = None  # the uid of its controller (a Workload's pods are matched by it, not by label)

    @property
    def quiet(self) -> bool:
        """A new pod waiting to be scheduled or started: nothing its Workload's status shows yet."""
        return not self.ready and self.phase == "Pending" and not self.deleting and self.broken is None


def pod_view(pod: Body) -> PodView:
    meta, status = pod["metadata"], pod.get("status") or {}
    labels = meta.get("labels") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    broken = next((f"container {cs.get('name')}: {w['reason']}" + (f" ({w['message']})" if w.get("message") else "")
                   for cs in status.get("containerStatuses") or []
                   if (w := (cs.get("state") or {}).get("waiting") or {}).get("reason") in BROKEN), None)
    owner = next((str(r.get("uid")) for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    return PodView(meta["name"], labels.get(names.L_REVISION), labels.get(names.L_DIGEST), ready,
                   status.get("phase"), bool(meta.get("deletionTimestamp")), broken, owner)


class ServiceView(NamedTuple):
    name: str
    ports: tuple[tuple[Any, ...], ...]  # (name, port, targetPort, protocol) each
    selector: tuple[tuple[str, str], ...]
    owners: tuple[str, ...]  # uids


def service_ports(ports: Iterable[Body]) -> tuple[tuple[Any, ...], ...]:
    return tuple((p.get("name"), p.get("port"), p.get("targetPort"), p.get("protocol")) for p in ports)


def service_view(svc: Body) -> ServiceView:
    meta, spec = svc["metadata"], svc.get("spec") or {}
    return ServiceView(meta["name"], service_ports(spec.get("ports") or []),
                       tuple(sorted((spec.get("selector") or {}).items())),
                       tuple(str(r.get("uid")) for r in meta.get("ownerReferences") or []))


@dataclass(frozen=True)
class ArtifactView:
    """An Artifact's spec, parsed and hashed once per change of it (every Workload running it reads it)."""

    spec: ArtifactSpec | None
    digest: str  # of the spec: what a Workload's pods run (they run the images by tag)
    problem: str | None  # why the spec is invalid (then spec is None)
    uid: str = ""
    created: str = ""  # creationTimestamp
    created_by_workload: str | None = None  # the annotation of an Artifact made from an inline one
    # Once Registered, as admission recorded them: its images' digests, and its version.
    images: tuple[ImageStatus, ...] | None = None
    collection: str | None = None
    version: int | None = None

    @property
    def registered_digest(self) -> str:
        """What identifies it: the spec's digest, and once Registered, its images' digests too."""
        return spec_digest(self.spec, self.images) if self.spec is not None and self.images else self.digest


def artifact_view(art: Body) -> ArtifactView:
    meta = art.get("metadata") or {}
    ident = (str(meta.get("uid") or ""), str(meta.get("creationTimestamp") or ""),
             (meta.get("annotations") or {}).get(names.A_CREATED_BY_WORKLOAD))
    try:
        parsed = ArtifactSpec.model_validate(art.get("spec") or {})
    except pydantic.ValidationError as e:
        return ArtifactView(None, "", problems(e), *ident)
    if not parsed.registered:
        return ArtifactView(parsed, spec_digest(parsed), None, *ident)
    labels, images = meta.get("labels") or {}, registered_images(meta.get("annotations") or {})
    version = str(labels.get(names.L_VERSION) or "")
    return ArtifactView(parsed, spec_digest(parsed), None, *ident, images=tuple(images) if images else None,
                        collection=labels.get(names.L_COLLECTION) if version else None,
                        version=int(version) if version.isdigit() else None)


def _key(obj: Body, of: str) -> Key:
    return str(obj["metadata"]["namespace"]), of


def _pod_entry(pod: Body) -> tuple[Key, PodView]:
    return _key(pod, pod["metadata"]["labels"][names.L_WORKLOAD]), pod_view(pod)


def _service_entry(svc: Body) -> tuple[Key, ServiceView]:
    return _key(svc, svc["metadata"]["labels"][names.L_WORKLOAD]), service_view(svc)


def _artifact_entry(art: Body) -> tuple[Key, ArtifactView]:
    return _key(art, art["metadata"]["name"]), artifact_view(art)


def workload_artifact(wl: Body) -> str:
    """The Artifact a Workload runs (from its raw body: the index keys every Workload, valid or not)."""
    return str(((wl.get("spec") or {}).get("artifactRef") or {}).get("name") or wl["metadata"]["name"])


def _workload_entry(wl: Body) -> tuple[Key, str]:
    return _key(wl, workload_artifact(wl)), str(wl["metadata"]["name"])


@dataclass
class Indexes:
    """What the operator knows from its watches: no list or get calls in a reconcile."""

    pods: Index[PodView]  # by (namespace, workload)
    artifacts: Index[ArtifactView]  # by (namespace, name)
    services: Index[ServiceView]  # by (namespace, workload)
    workloads: Index[str]  # workload names by (namespace, artifact they run)

    @classmethod
    def empty(cls) -> Indexes:
        return cls(Index(_pod_entry), Index(_artifact_entry), Index(_service_entry), Index(_workload_entry))

    def all(self) -> tuple[Index[Any], ...]:
        return self.pods, self.artifacts, self.services, self.workloads
