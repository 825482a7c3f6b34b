"""The operator's one runtime object: what it knows (the indexes), what it serves (namespaces), what
kopf has handled, the threads it works in. Built once by :func:`kiln.main.run` and handed to every
handler in kopf's ``memo`` (``memo.runtime``); nothing here is module state."""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import kopf
from kubernetes.client.exceptions import ApiException

from kiln import kube, metrics, names
from kiln.admission.process import Webhooks
from kiln.controllers.cache import Index, Indexes, deleted, pages
from kiln.controllers.podwatch import PodWatch

T = TypeVar("T")
# By then kopf has listed every kind (its initial listing confirms each entry still there); what it has
# not confirmed is checked with a GET.
SWEEP_AFTER = 120.0
# Every so often each index is compared with a LIST: a watch that re-lists after 410 Gone reports no
# deletion of what vanished meanwhile (KILN_RESYNC_SECONDS; 0: never). Hourly: a paged LIST of each kind
# is what an idle operator costs the API server (controller-runtime's default period is 10 hours).
RESYNC_SECONDS = 3600.0
# A new Workload's first status ("Starting") waits this long for its pods to start: when they are Ready
# sooner, the one write says "Running" (KILN_STATUS_GRACE_SECONDS; 0: written at once).
STATUS_GRACE = 10.0
# Each watch is renewed this often (a read per watched kind: what an idle operator costs the API server);
# the client gives up on a silent stream a little later. The API server's own bound is 30 to 60 minutes.
WATCH_SECONDS = 1800
INDEXED = ("pods", "artifacts", "services", "workloads")  # Indexes.all(), in order


class ObservedDiffBase(kopf.DiffBaseStorage):
    """What kopf last handled of each object, kept in memory instead of in an annotation on it.

    kopf's default records every handled spec in the object (one more write, and one more watch
    event, per change). Kiln's reconciles are level-triggered and record ``status.observedGeneration``
    already, so: an object first seen whose status observed its generation counts as handled (kopf
    resumes it), anything else is handled as new. Only a hash of each essence is kept."""

    def __init__(self) -> None:
        super().__init__()
        self._handled: dict[str, int] = {}

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if not extra_fields:
            # kopf deep-copies the whole body, status and managedFields included, to then drop them
            # (costly under load, docs/architecture.md): the same essence, from what it keeps.
            meta = body.get("metadata") or {}
            slim = {k: v for k, v in body.items() if k not in ("metadata", "status")}
            slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
            body = cast(kopf.Body, slim)
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        for key in [k for k in annotations if k.startswith(f"{names.KOPF_PREFIX}/")]:  # kopf's progress records
            del annotations[key]
        self.remove_empty_stanzas(essence)
        return essence

    @staticmethod
    def _hash(essence: kopf.BodyEssence) -> int:
        return hash(json.dumps(essence, sort_keys=True, separators=(",", ":")))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        essence = self.build(body=body)
        handled = self._handled.get(body.metadata.uid or "")
        if handled is None:
            observed = (body.get("status") or {}).get("observedGeneration")
            return essence if observed and observed == body.metadata.get("generation") else None
        # kopf diffs the two: the same essence means nothing to do; any difference, an update.
        return essence if handled == self._hash(essence) else cast(kopf.BodyEssence, {"changed": True})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._handled[body.metadata.uid or ""] = self._hash(essence)

    def forget(self, uid: str) -> None:
        self._handled.pop(uid, None)


class ProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's record of a handler's retries (how often it failed, until when it waits), kept in memory:
    an annotation on the object would be one more write per change, and one that users can write (a
    crafted ``delayed`` would postpone a reconcile, ``failure`` swallow it). Only kopf's wake-up stamp
    after a delay stays an annotation (what it records is harmless: at most a reconcile more), and
    kopf's ``kopf-managed`` marker is not written at all."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix=prefix)
        self._records: dict[tuple[str, str], kopf.ProgressRecord] = {}

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        return self._records.get((body.metadata.uid or "", key))

    def store(self, *, key: kopf.HandlerId, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records[(body.metadata.uid or "", key)] = record

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.pop((body.metadata.uid or "", key), None)

    def forget(self, uid: str) -> None:
        for k in [k for k in self._records if k[0] == uid]:
            del self._records[k]

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return


@dataclass
class Runtime:
    namespaces: Sequence[str] = ()  # served namespaces; empty: all
    webhooks: Webhooks | None = None
    indexes: Indexes = field(default_factory=Indexes.empty)
    diffbase: ObservedDiffBase = field(default_factory=ObservedDiffBase)
    progress: ProgressStorage = field(default_factory=lambda: ProgressStorage(prefix=names.KOPF_PREFIX))
    locks: kube.Locks = field(default_factory=kube.Locks)  # one reconcile of an object at a time
    executor: Executor | None = None  # kopf's thread pool, known once kopf has started
    restart_parallelism: int = 8  # Workloads reconciled at once after a change of the Artifact they run
    resync_interval: float = field(default_factory=lambda: float(os.environ.get("KILN_RESYNC_SECONDS")
                                                                 or RESYNC_SECONDS))
    # Each Workload's body as its last watch event brought it (by namespace and name), as compact JSON
    # (a fifth of the memory of the parsed dicts): what a reconcile starts from.
    workloads: dict[tuple[str, str], str] = field(default_factory=dict)
    status_grace: float = field(default_factory=lambda: float(os.environ.get("KILN_STATUS_GRACE_SECONDS")
                                                               or STATUS_GRACE))
    podwatch: PodWatch | None = None  # Kiln's own watch of its pods, once started
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _later: dict[Any, Callable[[], Any]] = field(default_factory=dict, repr=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)
    _resyncer: asyncio.Task[None] | None = field(default=None, repr=False)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """The one way to a thread: a blocking call in kopf's pool, with the caller's context (kopf's,
        for its Events and logs)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def later(self, key: Any, delay: float, fn: Callable[[], Any]) -> bool:
        """Call ``fn`` in a thread after ``delay`` seconds unless :meth:`cancel_later` comes first (or
        another call under ``key`` replaces it). Callable from any thread; False (nothing scheduled)
        before kopf has started."""
        loop = self._loop
        if loop is None:
            return False
        self._later[key] = fn

        async def fire() -> None:
            if self._later.get(key) is not fn:
                return  # cancelled, or replaced by a later one
            del self._later[key]
            try:
                await self.in_thread(fn)
            except Exception as e:  # its own triggers retry it
                logging.getLogger(__name__).warning(f"a delayed reconcile failed: {e}")

        loop.call_soon_threadsafe(lambda: loop.call_later(delay, lambda: asyncio.ensure_future(fire())))
        return True

    def cancel_later(self, key: Any) -> None:
        self._later.pop(key, None)

    def _lists(self) -> list[tuple[Callable[..., Any], ...]]:
        """The LIST calls that fill the indexes, in the order of :meth:`Indexes.all`, once per served
        namespace (or once for all namespaces)."""
        core, custom, sel = kube.core(), kube.custom(), {"label_selector": names.L_WORKLOAD}
        scopes: list[str | None] = [*self.namespaces] or [None]
        out: list[tuple[Callable[..., Any], ...]] = []
        for ns in scopes:
            if ns is None:
                lists: tuple[Callable[..., Any], ...] = (
                    functools.partial(core.list_pod_for_all_namespaces, **sel),
                    functools.partial(custom.list_cluster_custom_object, names.GROUP, names.VERSION, names.ARTIFACTS),
                    functools.partial(core.list_service_for_all_namespaces, **sel),
                    functools.partial(custom.list_cluster_custom_object, names.GROUP, names.VERSION, names.WORKLOADS))
            else:
                lists = (
                    functools.partial(core.list_namespaced_pod, ns, **sel),
                    functools.partial(custom.list_namespaced_custom_object, names.GROUP, names.VERSION, ns,
                                      names.ARTIFACTS),
                    functools.partial(core.list_namespaced_service, ns, **sel),
                    functools.partial(custom.list_namespaced_custom_object, names.GROUP, names.VERSION, ns,
                                      names.WORKLOADS))
            out.append(lists)
        return out

    def prime(self, logger: kopf.Logger) -> None:
        """One paged LIST per kind, before kopf starts watching; the watches keep the indexes after."""
        idx = self.indexes
        for lists in self._lists():
            for index, fetch in zip(idx.all(), lists, strict=True):
                if index is idx.pods and self.podwatch is not None:
                    continue  # listed by the watch, which goes on from its LIST
                for page in pages(fetch):
                    index.prime(page)
        if self.podwatch is not None:
            self.podwatch.prime()
        logger.info(f"indexed {len(idx.pods)} pods, {len(idx.artifacts)} artifacts, {len(idx.services)} services, "
                    f"{len(idx.workloads)} workloads")

    def sweep(self, logger: kopf.Logger) -> None:
        """Drop the index entries of objects deleted between the LIST and the watches."""
        core, custom = kube.core(), kube.custom()

        def exists(get: Callable[..., Any]) -> Callable[[str, str, str], bool]:
            def check(ns: str, name: str, uid: str) -> bool:
                try:
                    obj = json.loads(get(name, ns, _preload_content=False).data)
                except ApiException as e:
                    return bool(e.status != 404)
                return bool(obj["metadata"]["uid"] == uid)
            return check

        def custom_get(plural: str) -> Callable[..., Any]:
            return lambda name, ns, **kw: custom.get_namespaced_custom_object(names.GROUP, names.VERSION, ns, plural,
                                                                             name, **kw)

        gets = (core.read_namespaced_pod, custom_get(names.ARTIFACTS), core.read_namespaced_service,
                custom_get(names.WORKLOADS))
        try:
            dropped = sum(index.sweep(exists(get)) for index, get in zip(self.indexes.all(), gets, strict=True))
        except Exception as e:  # a background check's last resort: the entries stay, as before
            logger.warning(f"could not check the index entries no watch event has confirmed: {e}")
            return
        if dropped:
            logger.info(f"dropped {dropped} index entries of objects deleted while the operator started")

    def resync(self, logger: kopf.Logger,
               reconcile: Callable[[Runtime, str, str, kopf.Logger], None] | None = None) -> int:
        """Compare each index with a fresh paged, label-selected LIST: drop the entries of objects deleted
        without a watch event saying so (see :meth:`Index.drop_absent` for the races), then reconcile the
        Workloads whose pods, Service or Artifact were among them (a missing pod is recreated, the status
        corrected). ``reconcile``: :func:`kiln.controllers.workloads.reconcile` unless given. Returns how
        many entries were dropped."""
        if reconcile is None:
            from kiln.controllers import workloads  # here: that module imports this one

            reconcile = workloads.reconcile
        idx = self.indexes
        dropped: dict[str, int] = {}
        affected: set[tuple[str, str]] = set()  # Workloads (namespace, name)
        for i, (kind, index) in enumerate(zip(INDEXED, idx.all(), strict=True)):
            before = index.uids()  # before the LIST begins: what was indexed later is never dropped
            try:
                listed = {str(obj["metadata"]["uid"]) for lists in self._lists() for page in pages(lists[i])
                          for obj in page}
            except Exception as e:  # the API unreachable, a continue token expired: next time
                logger.warning(f"resync: could not list the {kind}, their index is left as it is: {e}")
                continue
            gone = index.drop_absent(before, listed)
            dropped[kind] = len(gone)
            for uid, (ns, of), value in gone:
                if index is idx.pods or index is idx.services:
                    affected.add((ns, of))
                elif index is idx.artifacts:
                    affected.update((ns, wl) for wl in idx.workloads.get((ns, of)))
                else:  # a Workload: its children go with it (garbage collection)
                    affected.discard((ns, str(value)))
                    self.workloads.pop((ns, str(value)), None)
                if index is idx.artifacts or index is idx.workloads:
                    self.diffbase.forget(uid)
                    self.progress.forget(uid)
        total = sum(dropped.values())
        if not total:
            logger.debug("resync: the indexes hold no deleted object")
            return 0
        logger.info(f"resync: dropped {total} index entries of objects deleted without a watch event ("
                    + ", ".join(f"{n} {kind}" for kind, n in dropped.items() if n)
                    + f"); reconciling {len(affected)} workload(s)")
        for ns, name in sorted(affected):
            try:
                reconcile(self, ns, name, logger)
            except Exception as e:  # its own triggers retry it; the others go on
                logger.warning(f"resync: reconciling Workload {ns}/{name} failed: {e}")
        return total

    async def start(self, settings: kopf.OperatorSettings, logger: kopf.Logger) -> None:
        """At kopf's start-up: its thread pool, the indexes, and later a check of what they hold, then a
        resync every ``resync_interval`` seconds."""
        from kiln.controllers import workloads  # here: that module imports this one

        self.executor = settings.execution.executor
        self._loop = asyncio.get_running_loop()
        self.podwatch = PodWatch(self.indexes.pods, tuple(self.namespaces),
                                 lambda ns, wl: workloads.reconcile(self, ns, wl, logger), logger, WATCH_SECONDS)
        await self.in_thread(self.prime, logger)
        _DIRECT_EVENTS.set(True)  # in the context the pods' watches copy: no kopf event queue there
        self.podwatch.start(self.executor)
        _DIRECT_EVENTS.set(False)

        async def sweep_later() -> None:
            await asyncio.sleep(SWEEP_AFTER)
            await self.in_thread(self.sweep, logger)

        async def resync_every(interval: float) -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.in_thread(self.resync, logger)
                except Exception as e:  # a background loop's last resort: try again next round
                    logger.warning(f"resync failed: {e}")

        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(sweep_later())
        if self.resync_interval > 0:
            self._resyncer = loop.create_task(resync_every(self.resync_interval))

    def stop(self) -> None:
        """Cancel the background loops and stop the pods' watches (at kopf's clean-up)."""
        if self.podwatch is not None:
            self.podwatch.stop()
        for task in (self._sweeper, self._resyncer):
            if task is not None:
                task.cancel()


def of(memo: Any) -> Runtime:
    """The runtime from a handler's ``memo``."""
    return cast(Runtime, memo.runtime)


_DIRECT_EVENTS: contextvars.ContextVar[bool] = contextvars.ContextVar("kiln_direct_events", default=False)


def event(body: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """An Event about a kiln.dev object, with the object as its subject: kopf posts it from its handlers'
    context; from the pods' watches (no kopf context) it is posted here, the same way."""
    if not _DIRECT_EVENTS.get():
        (kopf.warn if warning else kopf.info)(cast(kopf.Body, body), reason=reason, message=message)
        return
    ref = kopf.build_object_reference(cast(kopf.Body, body))
    at = datetime.datetime.now(datetime.UTC).isoformat()
    reply = kube.core().create_namespaced_event(ref["namespace"], {
        "metadata": {"generateName": "kopf-event-"}, "type": "Warning" if warning else "Normal",
        "reason": reason, "message": message[:1024], "action": "Action?", "source": {"component": "kopf"},
        "reportingComponent": "kopf", "reportingInstance": "dev", "involvedObject": dict(ref),
        "firstTimestamp": at, "lastTimestamp": at, "eventTime": at}, _preload_content=False)  # as kopf posts them
    kube.unread(reply)


@kopf.on.event(names.GROUP, names.VERSION, names.ARTIFACTS, when=deleted)
@kopf.on.event(names.GROUP, names.VERSION, names.WORKLOADS, when=deleted)
@kopf.on.event(names.GROUP, names.VERSION, names.DEPLOYMENTS, when=deleted)
async def forget_deleted(body: kopf.Body, uid: str, resource: kopf.Resource, memo: Any, **_: Any) -> None:
    """A deleted kiln.dev object leaves the memory of what kopf handled and retries, and its index. (Artifacts and
    Workloads enter their indexes from their own handlers: what is indexed of them is in their spec.)"""
    rt = of(memo)
    meta = body.get("metadata") or {}
    metrics.SEEN.forget(resource.plural, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    rt.diffbase.forget(uid)
    rt.progress.forget(uid)
    indexes: dict[str, Index[Any]] = {names.ARTIFACTS: rt.indexes.artifacts, names.WORKLOADS: rt.indexes.workloads}
    index = indexes.get(resource.plural)
    if index is not None:
        index.observe("DELETED", body)
