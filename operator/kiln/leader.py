"""Leader election for reconciling: every replica of the operator serves the admission webhooks, one
of them reconciles (runs kopf), chosen with a ``coordination.k8s.io/v1`` Lease.

Why a Lease loop of Kiln's own:

- kopf's peering is not leader election. It needs the ``KopfPeering`` CRDs installed and writable by
  the operator, operators of equal priority all pause when they see each other (a Deployment's
  replicas would need distinct priorities), and a crashed peer is noticed only once its lifetime
  (60 s by default) has passed.
- ``kubernetes.leaderelection`` (the client's port of client-go's) has a Lease lock, but it never
  releases the Lease on a clean stop (a successor waits a whole lease duration after every rollout),
  uses the process-wide default client configuration, only calls a callback when leadership is lost,
  and has no type hints.
- A Lease is what kube-controller-manager and kube-scheduler use: one small namespaced object, RBAC on
  that one name, no CRD, and a takeover with a known bound. This module follows client-go's rules:

  * a candidate takes the Lease when it is free (no holder: released) or when the record has not
    changed for ``lease_duration`` seconds *by the candidate's own clock* (it times how long it has seen
    the same ``resourceVersion``; the timestamps in the Lease are written for humans, so clock skew
    between nodes does not matter);
  * writes are replaces carrying the ``resourceVersion`` read, so of two candidates one wins (409);
  * the leader renews every ``retry_period`` from a thread of its own (not the event loop, which a busy
    kopf could hold up), and gives up (the process exits at once, see :func:`kiln.main.run`) when it
    has not renewed for ``renew_deadline``, which is shorter than ``lease_duration``: it stops acting
    before anyone else may start;
  * on a clean stop, after kopf has finished, the leader releases the Lease (empties the holder), and
    the next candidate takes it within one ``retry_period``.

Takeover: after a clean stop (SIGTERM, a rollout, ``kubectl delete pod``) within ``retry_period``
(2 s) plus kopf's start-up; after a crash or a forced deletion within ``lease_duration`` (15 s) plus
``retry_period`` plus kopf's start-up.
"""

from __future__ import annotations

import datetime
import http.server
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("kiln.leader")
Body = dict[str, Any]
Outcome = Literal["leader", "other", "error"]


def default_identity() -> str:
    """Unique per process: the pod's name (POD_NAME, from the downward API) or the host's, and a
    random suffix, so that a restarted container does not mistake its predecessor's record for its own."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time(t: datetime.datetime) -> str:
    """A metav1.MicroTime as the API server parses it (always six fractional digits)."""
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElection:
    name: str
    namespace: str
    identity: str = field(default_factory=default_identity)
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    api: Any = None  # a CoordinationV1Api; kiln.kube's client by default
    # What this candidate has seen: the record's resourceVersion and when (monotonic) it changed.
    _observed_version: str | None = field(default=None, repr=False)
    _observed_at: float = field(default=0.0, repr=False)
    _leading: bool = field(default=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _renewer: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration")
        if self.api is None:
            from kiln import kube

            self.api = client.CoordinationV1Api(kube.api_client())

    @classmethod
    def with_duration(cls, name: str, namespace: str, lease_duration: int, identity: str | None = None,
                      ) -> LeaderElection:
        """client-go's proportions (15 s, 10 s, 2 s) for another lease duration."""
        return cls(name=name, namespace=namespace, identity=identity or default_identity(),
                   lease_duration=lease_duration, renew_deadline=lease_duration * 2 / 3,
                   retry_period=max(lease_duration / 7.5, 0.2))

    @property
    def leading(self) -> bool:
        return self._leading

    # --- one attempt --------------------------------------------------------------------------------

    def _spec(self, now: datetime.datetime, acquired: str, transitions: int) -> Body:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration,
                "acquireTime": acquired, "renewTime": _micro_time(now), "leaseTransitions": transitions}

    def _observe(self, version: str) -> None:
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, time.monotonic()

    def try_acquire_or_renew(self) -> Outcome:
        """One read and at most one write: whether this candidate now holds the Lease."""
        timeout = self.retry_period
        now = datetime.datetime.now(datetime.UTC)
        try:
            try:
                raw = self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                     _request_timeout=timeout)
                lease: Body = json.loads(raw.data)
            except ApiException as e:
                if e.status != 404:
                    raise
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(now, _micro_time(now), 0)}
                raw = self.api.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                       _request_timeout=timeout)
                self._observe(json.loads(raw.data)["metadata"]["resourceVersion"])
                return "leader"
            self._observe(lease["metadata"]["resourceVersion"])
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            duration = int(spec.get("leaseDurationSeconds") or self.lease_duration)
            if holder and holder != self.identity and time.monotonic() - self._observed_at < duration:
                return "other"  # held, and renewed (or first seen) less than a lease duration ago
            ours = holder == self.identity
            acquired = str(spec.get("acquireTime") or "") if ours else ""
            acquired = acquired or _micro_time(now)
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours or not holder else 1)
            lease["spec"] = {**spec, **self._spec(now, acquired, transitions)}
            raw = self.api.replace_namespaced_lease(self.name, self.namespace, lease, _preload_content=False,
                                                    _request_timeout=timeout)
            self._observe(json.loads(raw.data)["metadata"]["resourceVersion"])
            if not ours:
                log.info(f"{self.identity} took lease {self.namespace}/{self.name}"
                         + (f" from {holder}" if holder else " (released)"))
            return "leader"
        except ApiException as e:
            if e.status == 409:  # someone else wrote it first: read again next time
                return "other"
            log.warning(f"lease {self.namespace}/{self.name}: {e.status} {e.reason}")
            return "error"
        except Exception as e:  # connection errors, time-outs: retried until the deadline
            log.warning(f"lease {self.namespace}/{self.name}: {type(e).__name__}: {e}")
            return "error"

    # --- the three phases ---------------------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this candidate leads (True) or ``stop`` is set (False)."""
        log.info(f"{self.identity} waiting for lease {self.namespace}/{self.name}")
        last_holder_logged = 0.0
        while not stop.is_set():
            if self.try_acquire_or_renew() == "leader":
                self._leading = True
                log.info(f"{self.identity} leads (lease {self.namespace}/{self.name})")
                return True
            if time.monotonic() - last_holder_logged > 60:
                last_holder_logged = time.monotonic()
                log.info(f"lease {self.namespace}/{self.name} is held by another replica: following")
            stop.wait(self.retry_period)
        return False

    def start_renewing(self, on_lost: Callable[[str], None]) -> None:
        """Renew in a thread of its own; ``on_lost`` is called (in that thread) once, when leadership
        is lost: another holder, or no renewal for ``renew_deadline``."""
        assert self._leading, "acquire first"

        def renew() -> None:
            last_renewed = time.monotonic()
            while True:
                left = last_renewed + self.renew_deadline - time.monotonic()
                if self._stop.wait(max(0.0, min(self.retry_period, left))):
                    return
                if time.monotonic() - last_renewed >= self.renew_deadline:
                    self._leading = False
                    on_lost(f"the lease was not renewed for {self.renew_deadline:.0f}s")
                    return
                started = time.monotonic()  # the lease counts from when the write was sent
                outcome = self.try_acquire_or_renew()
                if outcome == "leader":
                    last_renewed = started
                elif outcome == "other" and self._held_by_other():
                    self._leading = False
                    on_lost("another replica holds the lease")
                    return

        self._renewer = threading.Thread(target=renew, name="kiln-lease", daemon=True)
        self._renewer.start()

    def _held_by_other(self) -> bool:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.retry_period)
        except Exception:  # unknown: the deadline decides
            return False
        return bool(lease.spec and lease.spec.holder_identity and lease.spec.holder_identity != self.identity)

    def release(self) -> None:
        """Stop renewing and, if still the holder, empty the Lease's holder so that a successor takes
        it at once. Call it only once this replica has stopped reconciling."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(self.retry_period * 2)
        if not self._leading:
            return
        self._leading = False
        try:
            raw = self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                 _request_timeout=self.retry_period)
            lease: Body = json.loads(raw.data)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1,
                             "renewTime": _micro_time(datetime.datetime.now(datetime.UTC))}
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _preload_content=False,
                                              _request_timeout=self.retry_period)
            log.info(f"{self.identity} released lease {self.namespace}/{self.name}")
        except Exception as e:  # the successor then waits for the lease to expire
            log.warning(f"could not release lease {self.namespace}/{self.name}: {e}")


class HealthServer:
    """The liveness endpoint of a follower (kopf's serves it once this replica leads): 200 while
    ``healthy()`` says so, 500 otherwise; on the address and path of kopf's (``http://HOST:PORT/PATH``)."""

    def __init__(self, url: str, healthy: Callable[[], bool]) -> None:
        parts = urlsplit(url)
        path = parts.path or "/"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the standard library's name
                ok = healthy()
                code = 404 if self.path.split("?", 1)[0] != path else 200 if ok else 500
                body = json.dumps({"leader": False, "webhooks": "running" if ok else "down"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # the standard library's name
                return

        self.server = http.server.ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="kiln-health", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
