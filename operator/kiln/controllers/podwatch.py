"""Kiln's own watch of its pods, the hottest kind (three events or more per pod started), read without
kopf's per-event machinery (about 0.6 ms of CPU per event, docs/benchmarks.md).

One thread per served namespace (or one for all) reads a label-selected watch that starts at the
resourceVersion of the LIST that primed the index: nothing between the two is missed. Each event
updates the pods index; a change that matters to its Workload (readiness, failure, deletion) queues a
reconcile of it in kopf's thread pool, at most one waiting per Workload (the events that come while
one waits are covered by it). A watch that expires (410 Gone) re-lists: what changed or vanished
meanwhile is reconciled.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from kiln import kube, names
from kiln.controllers.cache import Index, PodView

Body = dict[str, Any]
Key = tuple[str, str]
PAGE = 500
BACKOFF = 1.0  # seconds between attempts after an error


def matters(before: PodView | None, after: PodView | None) -> bool:
    """Whether a pod's event can change its Workload's status or pods: its readiness, failure or deletion
    (a new pod waiting to be scheduled, or an event that changes nothing Kiln reads, does not)."""
    return after is None or (after != before and not (before is None and after.quiet))


class PodWatch:
    """The watches of Kiln's pods. ``reconcile(namespace, workload)`` is called in ``executor``'s
    threads with the context :meth:`start` was called in (kopf's: its Events and logs)."""

    def __init__(self, index: Index[PodView], namespaces: tuple[str, ...], reconcile: Callable[[str, str], None],
                 logger: kopf.Logger, watch_seconds: int) -> None:
        self.index = index
        self.scopes: tuple[str | None, ...] = namespaces or (None,)
        self.reconcile = reconcile
        self.logger = logger
        self.watch_seconds = watch_seconds
        self.versions: dict[str | None, str] = {}  # the resourceVersion each scope's watch goes on from
        self._queued: set[Key] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._responses: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._context: contextvars.Context | None = None
        self._executor: Any = None

    # --- listing ---------------------------------------------------------------------------------

    def _list(self, scope: str | None, **kw: Any) -> Any:
        core, sel = kube.core(), names.L_WORKLOAD
        if scope is None:
            return core.list_pod_for_all_namespaces(label_selector=sel, _preload_content=False, **kw)
        return core.list_namespaced_pod(scope, label_selector=sel, _preload_content=False, **kw)

    def pages(self, scope: str | None) -> Iterator[list[Body]]:
        """A paged LIST of the scope's pods. Once every page is through, records the resourceVersion the
        scope's watch goes on from (a listing cut short leaves none: the next attempt lists again)."""
        token, version = None, ""
        while True:
            reply = json.loads(self._list(scope, limit=PAGE, _continue=token).data)
            meta = reply.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            yield list(reply["items"])
            token = meta.get("continue")
            if not token:
                self.versions[scope] = version
                return

    def prime(self) -> None:
        """The index's first listing (before anything reads it). Nothing here is left to confirm: the
        watches start where these LISTs ended."""
        for scope in self.scopes:
            for page in self.pages(scope):
                self.index.prime(page, confirmed=True)

    def relist(self, scope: str | None) -> None:
        """After 410 Gone: the index brought to a fresh LIST, and the Workloads whose pods changed or
        vanished meanwhile reconciled."""
        before = self.index.uids(scope)
        listed: set[str] = set()
        for page in self.pages(scope):
            for pod in page:
                listed.add(str(pod["metadata"]["uid"]))
                self.dispatch("MODIFIED", pod)
        for _, key, _ in self.index.drop_absent(before, listed):
            self.queue(key)

    # --- watching --------------------------------------------------------------------------------

    def start(self, executor: Any) -> None:
        """Watch every scope, each in a thread of its own, from the versions :meth:`prime` recorded."""
        self._context = contextvars.copy_context()
        self._executor = executor
        for scope in self.scopes:
            thread = threading.Thread(target=self._run, args=(scope,), name=f"kiln-pods-{scope or 'all'}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            responses = list(self._responses)
        for resp in responses:  # unblocks the threads' reads
            with contextlib.suppress(Exception):  # already closed
                resp.shutdown()

    def _run(self, scope: str | None) -> None:
        while not self._stop.is_set():
            try:
                if not self.versions.get(scope):
                    self.relist(scope)
                self._watch(scope)
            except Exception as e:  # the API server unreachable, a stream cut: again, from where it was
                if self._stop.is_set():
                    return
                if isinstance(e, ApiException) and e.status == 410:
                    self.versions[scope] = ""  # expired: list again
                self.logger.warning(f"the watch of pods ({scope or 'all namespaces'}) failed, resuming: {e}")
                self._stop.wait(BACKOFF)

    def _watch(self, scope: str | None) -> None:
        resp = self._list(scope, watch=True, resource_version=self.versions[scope], allow_watch_bookmarks=True,
                          timeout_seconds=self.watch_seconds, _request_timeout=(30, self.watch_seconds + 30))
        with self._lock:
            self._responses.add(resp)
        try:
            for line in _lines(resp):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # expired: list again
                        self.versions[scope] = ""
                        return
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                self.versions[scope] = str(obj["metadata"]["resourceVersion"])
                if kind != "BOOKMARK":
                    self.dispatch(str(kind), obj)
        finally:
            with self._lock:
                self._responses.discard(resp)
            resp.release_conn()

    def dispatch(self, kind: str, pod: Body) -> None:
        """One event: the index updated, the Workload queued if the change matters to it."""
        if names.L_WORKLOAD not in ((pod.get("metadata") or {}).get("labels") or {}):
            return
        before, after = self.index.observe(kind, pod)
        if matters(before, after):
            self.queue((str(pod["metadata"]["namespace"]), str(pod["metadata"]["labels"][names.L_WORKLOAD])))

    def queue(self, key: Key) -> None:
        """A reconcile of the Workload, unless one is already waiting to start (it will see this too)."""
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)
        if self._executor is None or self._context is None:  # not watching (a relist before start): later
            with self._lock:
                self._queued.discard(key)
            return
        self._executor.submit(self._context.copy().run, self._reconcile, key)

    def _reconcile(self, key: Key) -> None:
        with self._lock:
            self._queued.discard(key)
        try:
            self.reconcile(*key)
        except Exception as e:  # as kopf does with an event handler's error: logged; the next event retries
            self.logger.warning(f"reconciling Workload {key[0]}/{key[1]} after a pod event failed: {e}")


def _lines(resp: Any) -> Iterator[bytes]:
    """The lines of a streamed reply (a watch: one JSON event per line)."""
    rest = b""
    for chunk in resp.stream(None, decode_content=False):  # each chunk as it comes
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from (line for line in lines if line)
    if rest:
        yield rest
