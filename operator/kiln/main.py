"""The operator: kopf settings, the admission webhook server's process, and ``run``."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
from kubernetes.client.rest import ApiException

# Handlers register themselves with kopf on import.
from kiln import admission, artifacts, cache, deployments, kube, workloads  # noqa: F401 - registration
from kiln import builders as b
from kiln.cluster import free_port, listening, serving_certificate

# kopf's own annotations. Not "kiln.dev": kopf leaves annotations under its prefix out of the diff it
# reacts to, and users' kiln.dev/restartedAt must trigger a reconcile.
PREFIX = "operator.kiln.dev"


@dataclass
class Webhooks:
    """Where and how the admission webhooks are served.

    Development (``kiln run``): on 127.0.0.1 with a certificate made at start-up, registered with the
    API server by URL. In a cluster (``--webhook-cert-dir``, the Helm chart): on all interfaces of the
    pod with the mounted certificate; the chart owns the webhook configurations."""

    port: int
    certdir: Path
    addr: str = "127.0.0.1"
    register: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def make_certificates(self) -> None:
        serving_certificate(self.certdir)

    def start(self, timeout: float = 30) -> None:
        """Start the webhook server's process and return once it accepts connections."""
        self.process = subprocess.Popen([
            sys.executable, "-m", "kiln.webhook", f"--addr={self.addr}", f"--port={self.port}",
            f"--cert={self.certdir / 'tls.crt'}", f"--key={self.certdir / 'tls.key'}"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the webhook server exited with code {self.process.returncode}")
            if listening(self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the webhook server did not listen on port {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def configurations(self) -> tuple[dict[str, Any], dict[str, Any]]:
        ca = base64.b64encode((self.certdir / "ca.crt").read_bytes()).decode()
        return admission.webhook_configurations({"url": f"https://127.0.0.1:{self.port}", "caBundle": ca})


_webhooks: Webhooks | None = None


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
            # kopf deep-copies the whole body, status and managedFields included, to then drop them:
            # a fifth of the operator's CPU under load. The same essence, from what it keeps.
            meta = body.get("metadata") or {}
            slim = {k: v for k, v in body.items() if k not in ("metadata", "status")}
            slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
            body = cast(kopf.Body, slim)
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        for key in [k for k in annotations if k.startswith(f"{PREFIX}/")]:  # kopf's progress records
            del annotations[key]
        self.remove_empty_stanzas(essence)
        return essence

    @staticmethod
    def _hash(essence: kopf.BodyEssence) -> int:
        import json

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


DIFFBASE = ObservedDiffBase()


@kopf.on.event("kiln.dev", "v1alpha1", "artifacts", when=cache.deleted)
@kopf.on.event("kiln.dev", "v1alpha1", "workloads", when=cache.deleted)
@kopf.on.event("kiln.dev", "v1alpha1", "deployments", when=cache.deleted)
async def forget_deleted(uid: str, **_: Any) -> None:
    DIFFBASE.forget(uid)


class ProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's record of a handler's retries, in annotations under our prefix while it retries; but
    without the ``<prefix>/kopf-managed: yes`` marker kopf adds when it first handles an object, which
    would be one more write for every object created."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.persistence.finalizer = "kiln.dev/finalizer"
    settings.persistence.progress_storage = ProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = DIFFBASE
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Only Kiln's own children are watched, filtered by the API server (kopf's handler filters act
    # after every pod and Service in the cluster has been received); the first listing comes in pages.
    settings.watching.label_selectors[("v1", "pods")] = b.L_WORKLOAD
    settings.watching.label_selectors[("v1", "services")] = b.L_WORKLOAD
    settings.watching.label_selectors[("apps", "v1", "deployments")] = b.L_DEPLOYMENT
    settings.watching.chunk_size = 500
    settings.execution.max_workers = int(os.environ.get("KILN_WORKERS", "20"))
    # At most this many objects in flight at once (each holds a kopf worker, its event and state):
    # bounds the memory of a resync of thousands of objects. (Safe because Kiln keeps its own
    # indexes, kiln.cache: kopf's would make each worker wait for all objects to be indexed.)
    settings.queueing.worker_limit = int(os.environ.get("KILN_WORKER_LIMIT", "100"))
    # A worker waits this long for more events of its object before it frees its place (kopf's
    # default, 5 s, would hold the places of objects that are done).
    settings.queueing.idle_timeout = 0.5
    settings.networking.request_timeout = 60
    if _webhooks is None:
        return
    logger.info(f"webhooks served on https://{_webhooks.addr}:{_webhooks.port}")
    if _webhooks.register:
        validating, mutating = _webhooks.configurations()
        api = kube.admission_api()
        for body, create, read, replace in (
                (validating, api.create_validating_webhook_configuration, api.read_validating_webhook_configuration,
                 api.replace_validating_webhook_configuration),
                (mutating, api.create_mutating_webhook_configuration, api.read_mutating_webhook_configuration,
                 api.replace_mutating_webhook_configuration)):
            try:
                create(body)
            except ApiException as e:
                if e.status != 409:
                    raise
                # Left by an operator that did not stop cleanly: replaced (which needs its version).
                version = read(admission.CONFIG_NAME).metadata.resource_version
                replace(admission.CONFIG_NAME, {**body, "metadata": {**body["metadata"], "resourceVersion": version}})
        logger.info(f"registered validating/mutatingwebhookconfiguration {admission.CONFIG_NAME}")


@kopf.on.probe(id="webhooks")
def webhook_server_alive(**_: Any) -> str:
    """The liveness endpoint fails when the webhook server's process has died."""
    if _webhooks is None:
        return "not served"
    if _webhooks.process is None or _webhooks.process.poll() is not None:
        raise RuntimeError("the admission webhook server is not running")
    return "running"


@kopf.on.cleanup()
def remove_local_webhooks(logger: logging.Logger, **_: Any) -> None:
    if _webhooks is not None and _webhooks.register:
        api = kube.admission_api()
        kube.ignore(404)(api.delete_validating_webhook_configuration)(admission.CONFIG_NAME)
        kube.ignore(404)(api.delete_mutating_webhook_configuration)(admission.CONFIG_NAME)
        logger.info(f"removed validating/mutatingwebhookconfiguration {admission.CONFIG_NAME}")


def _no_handler_successes(record: logging.LogRecord) -> bool:
    """kopf logs each handler's success at INFO, a line per watch event handled; failures, retries
    and Kiln's own messages still go through."""
    msg = record.msg
    return not (isinstance(msg, str) and msg.startswith("Handler ") and msg.endswith(" succeeded."))


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own arena (up to 8 per core); with kopf's worker
    threads that multiplies the resident memory for no gain. Same as MALLOC_ARENA_MAX=2."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


def run(namespaces: list[str], webhook_port: int = 0, webhooks: bool = True, register_webhooks: bool = True,
        webhook_cert_dir: str | None = None, liveness: str | None = None) -> int:
    """Run the operator until interrupted, against the current kubeconfig (or in-cluster config)."""
    global _webhooks
    workloads.NAMESPACES[:] = namespaces
    _limit_malloc_arenas()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").addFilter(_no_handler_successes)
    if webhooks and webhook_cert_dir:
        _webhooks = Webhooks(port=webhook_port or 9443, certdir=Path(webhook_cert_dir), addr="0.0.0.0",
                             register=False)
    elif webhooks:
        state = Path(os.environ.get("KILN_OPERATOR_DIR")
                     or Path.home() / ".local" / "state" / "kiln" / "operator")
        _webhooks = Webhooks(port=webhook_port or free_port(), certdir=state / "webhook-certs",
                             register=register_webhooks)
        _webhooks.make_certificates()
    try:
        if _webhooks is not None:
            _webhooks.start()
        asyncio.run(kopf.operator(
            standalone=True,
            namespaces=namespaces,
            clusterwide=not namespaces,
            liveness_endpoint=liveness,
        ))
    finally:
        if _webhooks is not None:
            _webhooks.stop()
    return 0
