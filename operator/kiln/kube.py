"""The Kubernetes API client the reconcilers use, and small helpers around its errors."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kiln.builders import GROUP, VERSION
from kiln.conditions import merge

Body = dict[str, Any]


@functools.cache
def api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = 64
    return client.ApiClient(cfg)


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def apps() -> client.AppsV1Api:
    return client.AppsV1Api(api_client())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def unread(response: Any) -> None:
    """Drop a reply asked for undecoded (``_preload_content=False``: no client models built). Its body
    is read and its connection returned to the pool; left unread, every call would open a new TLS
    connection."""
    response.read()
    response.release_conn()


class ChildConflict(Exception):
    """A child object's name is taken by an object this owner does not own: reported in a
    condition, never overwritten."""


def get_kiln(plural: str, namespace: str, name: str) -> Body | None:
    """A kiln.dev object as a dict, or None when it does not exist."""
    try:
        obj: Body = custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def list_kiln(plural: str, namespace: str) -> list[Body]:
    listing: Body = custom().list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(listing["items"])


def patch_kiln_status(plural: str, namespace: str, name: str, status: Body) -> None:
    custom().patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name,
                                                   {"status": status})


def write_status(plural: str, obj: Body, fields: Body, conditions: list[dict[str, Any]]) -> None:
    """Set an object's status to ``fields`` plus ``observedGeneration`` and the whole conditions list,
    patching only when something changed: an idle resync writes nothing."""
    meta = obj["metadata"]
    old = obj.get("status") or {}
    new = {**fields, "observedGeneration": meta.get("generation"),
           "conditions": merge(old.get("conditions"), conditions)}
    if all(old.get(k) == v for k, v in new.items()):
        return
    # A merge patch: fields set before but absent now are cleared explicitly.
    new.update({k: None for k in old if k not in new})
    patch_kiln_status(plural, meta["namespace"], meta["name"], new)


def reason(e: ApiException) -> str:
    """The API server's message from an error, for a condition."""
    import json

    try:
        return str(json.loads(e.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{e.status} {e.reason}"


def ignore(*codes: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Call an API function, treating the given HTTP codes (404, 409 …) as success."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ApiException as e:
                if e.status in codes:
                    return None
                raise

        return wrapper

    return deco


# Each object's lock and how many callers hold or wait for it: dropped when none do, so that the
# table holds the objects being reconciled, not every object ever seen.
_locks: dict[tuple[str, ...], tuple[threading.Lock, int]] = {}
_locks_guard = threading.Lock()


@contextmanager
def locked(*key: str) -> Iterator[None]:
    """Serialise reconciles of one object: several triggers (its own events, its children's, its
    artifact's) may fire at once in kopf's worker threads."""
    with _locks_guard:
        lock, users = _locks.get(key, (threading.Lock(), 0))
        _locks[key] = (lock, users + 1)
    try:
        with lock:
            yield
    finally:
        with _locks_guard:
            lock, users = _locks[key]
            if users == 1:
                del _locks[key]
            else:
                _locks[key] = (lock, users - 1)


def admission_api() -> client.AdmissionregistrationV1Api:
    return client.AdmissionregistrationV1Api(api_client())


def policy() -> client.PolicyV1Api:
    return client.PolicyV1Api(api_client())
