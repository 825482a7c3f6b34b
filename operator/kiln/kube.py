"""The Kubernetes API client the controllers use, and small helpers around it: one for the errors
that mean "fine" (:func:`ignore`), one to converge an owned child (:func:`ensure_child`), one to write
a status only when it changed (:func:`write_status`)."""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kiln import metrics, tree
from kiln.api.models import KilnModel, ObjectMeta
from kiln.names import ARTIFACTS, GROUP, L_COLLECTION, L_VERSION, VERSION

Body = dict[str, Any]
T = TypeVar("T")
# The kubernetes client accepts JSON dicts where its type hints name its model classes, and Kiln sends
# dicts; its config loaders have no hints. Used through these two names, as Any, here only.
_client: Any = client
_config: Any = config


@functools.cache
def api_client() -> Any:
    try:
        _config.load_incluster_config()
    except config.ConfigException:
        _config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = 64
    return _client.ApiClient(cfg)


def core() -> Any:
    return _client.CoreV1Api(api_client())


def apps() -> Any:
    return _client.AppsV1Api(api_client())


def custom() -> Any:
    return _client.CustomObjectsApi(api_client())


def unread(response: Any) -> None:
    """Drop a reply asked for undecoded (``_preload_content=False``: no client models built). Its body
    is read and its connection returned to the pool; left unread, every call would open a new TLS
    connection."""
    response.read()
    response.release_conn()


class ChildConflict(Exception):
    """A child object's name is taken by an object this owner does not own: reported in a
    condition, never overwritten."""


def ignore(*codes: int) -> Callable[[Callable[..., T]], Callable[..., T | None]]:
    """Call an API function, treating the given HTTP codes (404, 409 …) as success (returns None)."""

    def deco(fn: Callable[..., T]) -> Callable[..., T | None]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T | None:
            try:
                return fn(*args, **kwargs)
            except ApiException as e:
                if e.status in codes:
                    return None
                raise

        return wrapper

    return deco


def get_kiln(plural: str, namespace: str, name: str) -> Body | None:
    """A kiln.dev object as a dict, or None when it does not exist."""
    obj: Body | None = ignore(404)(custom().get_namespaced_custom_object)(GROUP, VERSION, namespace, plural, name)
    return obj


def list_kiln(plural: str, namespace: str, label_selector: str = "") -> list[Body]:
    listing: Body = custom().list_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                           label_selector=label_selector)
    return list(listing["items"])


def find_artifact(namespace: str, name: str | None, collection: str | None = None,
                  version: int | None = None) -> Body | None:
    """An Artifact by name, or by the collection and version its registration stamped on it."""
    if name:
        return get_kiln(ARTIFACTS, namespace, name)
    found = list_kiln(ARTIFACTS, namespace, f"{L_COLLECTION}={collection},{L_VERSION}={version}")
    return found[0] if len(found) == 1 else None


def home_namespace() -> str:
    """The operator's own namespace (its Lease, its version counters): the pod's (POD_NAMESPACE from the
    downward API, or the ServiceAccount's), else "default" (`kiln run` outside a cluster)."""
    sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    return sa.read_text().strip() if sa.is_file() else "default"


def write_status(plural: str, meta: ObjectMeta, old: KilnModel, new: KilnModel) -> bool:
    """Patch an object's status to ``new`` when it differs from ``old`` (what the object has): an idle
    resync writes nothing. Fields set before but absent now are cleared (it is a merge patch)."""
    before, after = old.to_dict(), new.to_dict()
    metrics.SEEN.observe(plural, meta.namespace, meta.name, after)
    if before == after:
        return False
    patch = {**after, **{k: None for k in before if k not in after}}
    custom().patch_namespaced_custom_object_status(GROUP, VERSION, meta.namespace, plural, meta.name,
                                                   {"status": patch})
    return True


def reason(e: ApiException) -> str:
    """The API server's message from an error, for a condition."""
    try:
        return str(json.loads(e.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{e.status} {e.reason}"


def to_dict(obj: Any) -> Body:
    """A client model (or a dict) as the plain JSON dict the API server sent."""
    plain: Body = api_client().sanitize_for_serialization(obj)
    return plain


# --- owned children ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Children:
    """How to reach one kind of child object: the client calls, by (name, namespace)."""

    kind: str
    read: Callable[[str, str], Any]
    create: Callable[[str, Body], Any]  # (namespace, body)
    update: Callable[[str, str, Body, Body], Any]  # (name, namespace, desired, live)
    delete: Callable[[str, str], Any]

    @classmethod
    def patched(cls, kind: str, api: Any, suffix: str) -> Children:
        """A kind whose update is a merge patch of its spec (``read_namespaced_<suffix>`` etc.)."""
        return cls(kind, getattr(api, f"read_namespaced_{suffix}"), getattr(api, f"create_namespaced_{suffix}"),
                   lambda name, ns, desired, _: getattr(api, f"patch_namespaced_{suffix}")(
                       name, ns, {"spec": desired["spec"]}),
                   getattr(api, f"delete_namespaced_{suffix}"))


UNREAD: Body = {}  # ensure_child's default: read the live child


def ensure_child(children: Children, owner: ObjectMeta, owner_kind: str, name: str, desired: Body | None,
                 live: Body | None = UNREAD,
                 differs: Callable[[Body, Body], bool] = lambda d, lv: bool(tree.drift(d["spec"], lv["spec"]))
                 ) -> Body | None:
    """Converge one child of ``owner`` named ``name`` onto ``desired`` (None: it should not exist), given
    what is ``live`` (read when not given). A child of that name that this owner does not own is never
    touched: :class:`ChildConflict`. Returns the live child afterwards (None when there is none)."""
    ns = owner.namespace
    if live is UNREAD:
        live = read(children, name, ns)
    owned = live is not None and owned_by(live, owner.uid)
    if desired is None:
        if owned:
            ignore(404)(children.delete)(name, ns)
        return None
    if live is not None and not owned:
        raise ChildConflict(f"{children.kind} {name} exists and is not owned by this {owner_kind}")
    if live is None:
        made = ignore(409)(children.create)(ns, desired)
        if made is not None:
            return to_dict(made)
        # Made meanwhile (by another trigger of this reconcile, or someone else): judged as it is.
        live = read(children, name, ns)
        return ensure_child(children, owner, owner_kind, name, desired, live, differs) if live else None
    if differs(desired, live):
        return to_dict(children.update(name, ns, desired, live))
    return live


def read(children: Children, name: str, ns: str) -> Body | None:
    """A child as a plain dict, or None when it does not exist."""
    live = ignore(404)(children.read)(name, ns)
    return None if live is None else to_dict(live)


def owned_by(obj: Body, uid: str) -> bool:
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


class Locks:
    """One reconcile of an object at a time: several triggers (its own events, its children's, its
    artifact's) may fire at once in kopf's worker threads. Each object's lock is kept with how many
    callers hold or wait for it, and dropped when none do: the table holds the objects being
    reconciled, not every object ever seen."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, ...], tuple[threading.Lock, int]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def of(self, *key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self.held.get(key, (threading.Lock(), 0))
            self.held[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self.held[key]
                if users == 1:
                    del self.held[key]
                else:
                    self.held[key] = (lock, users - 1)


def admission_api() -> Any:
    return _client.AdmissionregistrationV1Api(api_client())


def rbac() -> Any:
    return _client.RbacAuthorizationV1Api(api_client())


def authorization() -> Any:
    return _client.AuthorizationV1Api(api_client())


def policy() -> Any:
    return _client.PolicyV1Api(api_client())


def gone_with_namespace(e: ApiException) -> bool:
    """The error of a write in a namespace being deleted (its objects go with it)."""
    return e.status == 403 and "being terminated" in str(e.body)
