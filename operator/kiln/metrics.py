"""Prometheus metrics (prometheus_client), named as controller-runtime operators name theirs, plus Kiln's own.

The operator's process: reconciles per controller (count, errors, duration, in flight), whether this
replica leads, and what the reconciles last saw of each object (workloads by state, artifacts by
lifecycle, governed Deployments by Ready and Approved, changes waiting for approval), restarts caused
by Draft changes and reverted hand edits. The webhook server's process: its requests, latency and
requests in flight (:data:`WEBHOOK_REQUESTS` ...). Each process serves its own ``/metrics``
(:func:`serve`). docs/operations.md lists them with the alerts built on them.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTROLLERS = ("artifact", "workload", "deployment")
BIND_WAIT = 10.0  # seconds to wait for the metrics port (the webhook server of a killed run leaves within 1 s)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RECONCILES = Counter("controller_runtime_reconcile_total", "Reconciles per controller and result.",
                     ["controller", "result"])
RECONCILE_ERRORS = Counter("controller_runtime_reconcile_errors_total", "Reconciles that raised an error.",
                           ["controller"])
RECONCILE_TIME = Histogram("controller_runtime_reconcile_time_seconds", "Time of one reconcile, lock wait included.",
                           ["controller"], buckets=RECONCILE_BUCKETS)
DEPTH = Gauge("workqueue_depth", "Reconciles started and not finished: waiting for the object's lock, or running.",
              ["name"])
LEADER = Gauge("kiln_leader", "1 on the replica that holds the Lease and reconciles; 0 on the others.")
DRAFT_RESTARTS = Counter("kiln_draft_restarts", "Workload restarts caused by a change of their Draft Artifact.")
DRIFT_REVERTS = Counter("kiln_drift_reverts", "Hand edits of Kiln's children reverted.", ["kind"])

WEBHOOK_REQUESTS = Counter("controller_runtime_webhook_requests_total", "Admission reviews answered, by HTTP code.",
                           ["webhook", "code"])
WEBHOOK_LATENCY = Histogram("controller_runtime_webhook_latency_seconds", "Time to answer an admission review.",
                            ["webhook"], buckets=WEBHOOK_BUCKETS)
WEBHOOK_IN_FLIGHT = Gauge("controller_runtime_webhook_requests_in_flight", "Admission reviews being answered.",
                          ["webhook"])

for _c in CONTROLLERS:  # every series exists from the start: rate() sees the first increase
    for _r in ("success", "error"):
        RECONCILES.labels(_c, _r)
    RECONCILE_ERRORS.labels(_c)
    DEPTH.labels(_c)


@contextmanager
def reconciling(controller: str) -> Iterator[None]:
    """Count and time one reconcile of ``controller``; an exception counts as an error and goes on."""
    DEPTH.labels(controller).inc()
    start = time.monotonic()
    try:
        yield
    except BaseException:
        RECONCILES.labels(controller, "error").inc()
        RECONCILE_ERRORS.labels(controller).inc()
        raise
    else:
        RECONCILES.labels(controller, "success").inc()
    finally:
        DEPTH.labels(controller).dec()
        RECONCILE_TIME.labels(controller).observe(time.monotonic() - start)


class Seen(Collector):
    """What the reconciles last wrote (or confirmed) of each object's status, as gauges at scrape time.
    Objects leave it when deleted; a follower, which reconciles nothing, reports none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def observe(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        seen = {"state": status.get("state"), "lifecycle": status.get("lifecycle"),
                "ready": (conditions.get("Ready") or {}).get("status") or "Unknown",
                "approved": (conditions.get("Approved") or {}).get("status") or "Unknown",
                "awaiting": ((conditions.get("Approved") or {}).get("reason") == "AwaitingApproval"
                             and (conditions.get("Approved") or {}).get("lastTransitionTime")) or None}
        with self._lock:
            self._objects[(plural, namespace, name)] = seen

    def forget(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.pop((plural, namespace, name), None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            objects = dict(self._objects)
        workloads = GaugeMetricFamily("kiln_workloads", "Workloads by observed state.", labels=["state"])
        artifacts = GaugeMetricFamily("kiln_artifacts", "Artifacts by lifecycle.", labels=["lifecycle"])
        deployments = GaugeMetricFamily("kiln_deployments", "Governed Deployments by Ready and Approved.",
                                        labels=["ready", "approved"])
        ready = GaugeMetricFamily("kiln_deployment_ready", "1 when a governed Deployment is Ready.",
                                  labels=["namespace", "name"])
        since = GaugeMetricFamily("kiln_approval_pending_since_timestamp_seconds",
                                  "When the change a governed Deployment waits to have approved was requested.",
                                  labels=["namespace", "name"])
        counts: dict[tuple[str, tuple[str, ...]], int] = {}
        for state in ("Pending", "Starting", "Running", "Stopped", "Failed"):
            counts[("workloads", (state,))] = 0
        for lifecycle in ("Draft", "Registered"):
            counts[("artifacts", (lifecycle,))] = 0
        pending = 0
        for (plural, ns, name), seen in objects.items():
            if plural == "workloads" and seen["state"]:
                counts[(plural, (seen["state"],))] = counts.get((plural, (seen["state"],)), 0) + 1
            elif plural == "artifacts" and seen["lifecycle"]:
                counts[(plural, (seen["lifecycle"],))] = counts.get((plural, (seen["lifecycle"],)), 0) + 1
            elif plural == "deployments":
                key = (plural, (seen["ready"], seen["approved"]))
                counts[key] = counts.get(key, 0) + 1
                ready.add_metric([ns, name], 1 if seen["ready"] == "True" else 0)
                if seen["awaiting"]:
                    pending += 1
                    since.add_metric([ns, name], _timestamp(seen["awaiting"]))
        families = {"workloads": workloads, "artifacts": artifacts, "deployments": deployments}
        for (plural, labels), n in counts.items():
            families[plural].add_metric(list(labels), n)
        approvals = GaugeMetricFamily("kiln_approvals_pending", "Governed Deployments whose change awaits approval.",
                                      value=pending)
        return [workloads, artifacts, deployments, ready, since, approvals]


def _timestamp(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


SEEN = Seen()


def serve(port: int, addr: str = "127.0.0.1", operator: bool = True) -> None:
    """Serve this process's ``/metrics`` over HTTP (a thread of its own); the operator's also reports
    what its reconciles saw (:data:`SEEN`)."""
    if operator:
        REGISTRY.register(SEEN)
    deadline = time.monotonic() + BIND_WAIT
    while True:
        try:
            start_http_server(port, addr)
            return
        except OSError as e:  # a process of a previous run, killed, may hold the port a moment longer
            if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
