"""Version numbers of Artifact collections: 1, 2, 3 ... per (namespace, collection), given at registration,
unique and never reused.

The counters live where the users of a namespace cannot write them: a ConfigMap per namespace in the
operator's own namespace, ``kiln-versions.<namespace>``, whose data maps each collection to the last
version given. It is updated with the resourceVersion it was read at (optimistic concurrency), so
concurrent registrations each get a number of their own; one that loses the race reads again. A
counter that is missing (a new install, a ConfigMap deleted) starts after the highest version the
collection's Artifacts carry.

The API server runs admission again when an update meets a conflict in storage (a merge patch racing
the operator's own writes): the counter also records which Artifact (uid) took the last number, and the
same Artifact asking again gets the same number. A registration refused after its number was taken
leaves a gap: numbers are never reused, not necessarily consecutive.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from kiln import kube
from kiln.names import ARTIFACTS, L_COLLECTION, L_VERSION, MANAGED_BY

ATTEMPTS = 200  # each lost race means another registration got its number: enough for any burst


def counter_name(namespace: str) -> str:
    return f"kiln-versions.{namespace}"


def highest(namespace: str, collection: str) -> int:
    """The highest version that Artifacts of the collection carry (0: none)."""
    found = [art["metadata"]["labels"].get(L_VERSION, "")
             for art in kube.list_kiln(ARTIFACTS, namespace, f"{L_COLLECTION}={collection},{L_VERSION}")]
    return max((int(v) for v in found if v.isdigit()), default=0)


def next_version(namespace: str, collection: str, uid: str = "", dry_run: bool = False) -> int:
    """Take the collection's next version number for the Artifact ``uid`` (none on creation: a create is
    not retried), or the one it took last (``dry_run``: say which it would be, take nothing)."""
    core, home, name = kube.core(), kube.home_namespace(), counter_name(namespace)
    for _ in range(ATTEMPTS):
        counter: Any = kube.ignore(404)(core.read_namespaced_config_map)(name, home)
        data = dict((counter.data if counter is not None else None) or {})
        last = int(data[collection]) if str(data.get(collection, "")).isdigit() else highest(namespace, collection)
        taker = f"{collection}.uid"  # collections are DNS labels: no key of theirs has a dot
        if uid and data.get(taker) == uid:
            return last
        version = last + 1
        if dry_run:
            return version
        data[collection] = str(version)
        data[taker] = uid
        try:
            if counter is None:
                core.create_namespaced_config_map(home, {"metadata": {
                    "name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}}, "data": data})
            else:
                core.replace_namespaced_config_map(name, home, {"metadata": {
                    "name": name, "resourceVersion": counter.metadata.resource_version,
                    "labels": counter.metadata.labels or {}}, "data": data})
            return version
        except ApiException as e:
            if e.status != 409:  # 409: another registration took a number meanwhile; read again
                raise
    raise RuntimeError(f"no version for collection {collection} in namespace {namespace} after {ATTEMPTS} attempts")
