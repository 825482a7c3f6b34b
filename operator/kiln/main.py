"""`kiln run`: the operator's process. Builds the one :class:`~kiln.controllers.runtime.Runtime`, starts
the admission webhook server's process, configures kopf and runs it with the controllers' handlers."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import kopf

# The controllers register their handlers with kopf on import.
from kiln import kube, leader, logs, metrics, registry
from kiln.admission.process import HOST, Webhooks, free_port
from kiln.controllers import artifacts, deployments, runtime, workloads  # noqa: F401 - registration
from kiln.controllers.runtime import WATCH_SECONDS
from kiln.names import FINALIZER, L_DEPLOYMENT, L_WORKLOAD


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    rt = runtime.of(memo)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = rt.progress
    settings.persistence.diffbase_storage = rt.diffbase
    settings.posting.level = logging.INFO
    # Each watch is renewed this often (a read per watched kind: what an idle operator costs the API
    # server); the client gives up on a silent stream a little later.
    settings.watching.server_timeout = WATCH_SECONDS
    settings.watching.client_timeout = WATCH_SECONDS + 30
    settings.watching.connect_timeout = 30
    # Only Kiln's own children are watched, filtered by the API server (kopf's handler filters act
    # after every pod and Service in the cluster has been received); the first listing comes in pages.
    settings.watching.label_selectors[("v1", "services")] = L_WORKLOAD
    settings.watching.label_selectors[("apps", "v1", "deployments")] = L_DEPLOYMENT
    settings.watching.chunk_size = 500
    settings.execution.max_workers = int(os.environ.get("KILN_WORKERS", "20"))
    # At most this many objects in flight at once (each holds a kopf worker, its event and state):
    # bounds the memory of a resync of thousands of objects. (Safe because Kiln keeps its own
    # indexes, kiln.controllers.cache: kopf's would make each worker wait for all objects to be indexed.)
    settings.queueing.worker_limit = int(os.environ.get("KILN_WORKER_LIMIT", "200"))
    # A worker waits this long for more events of its object before it frees its place (kopf's
    # default, 5 s, would hold the places of objects that are done). A place is held for this long
    # after each object: with 0.5 s, 200 objects a second at most, 50 s for a start with 10,000.
    settings.queueing.idle_timeout = 0.05
    settings.networking.request_timeout = 60
    await rt.start(settings, logger)
    if rt.webhooks is not None:
        logger.info(f"webhooks served on https://{rt.webhooks.addr}:{rt.webhooks.port}")
        if rt.webhooks.register:
            await rt.in_thread(rt.webhooks.register_configurations, logger)


@kopf.on.probe(id="webhooks")
def webhook_server_alive(memo: Any, **_: Any) -> str:
    """The liveness endpoint fails when the webhook server's process has died."""
    webhooks = runtime.of(memo).webhooks
    if webhooks is None:
        return "not served"
    if not webhooks.alive:
        raise RuntimeError("the admission webhook server is not running")
    return "running"


@kopf.on.cleanup()
async def stop_background_tasks(memo: Any, **_: Any) -> None:
    """The pods' watches, the index sweep and resync loops end now: kopf would otherwise wait for them
    (5 s) on every stop, which a successor waiting for the Lease would wait too."""
    runtime.of(memo).stop()


@kopf.on.cleanup()
def remove_local_webhooks(memo: Any, logger: kopf.Logger, **_: Any) -> None:
    webhooks = runtime.of(memo).webhooks
    if webhooks is not None and webhooks.register:
        webhooks.unregister_configurations(logger)


def _kopf_chatter(record: logging.LogRecord) -> bool:
    """kopf logs each handler's success at INFO, a line per watch event handled: dropped. Its summary of
    each change handled ("Creation is processed: 1 succeeded; 0 failed.") stays in the log but is not
    posted as an Event (kopf would post one per object created, changed or resumed: an API write each,
    10,000 of them at a restart with 10,000 objects). Failures, retries and Kiln's own messages and
    Events go through."""
    msg = record.msg
    if not isinstance(msg, str):
        return True
    if msg.startswith("Handler ") and msg.endswith(" succeeded."):
        return False
    if " is processed: " in msg or " is superseded by " in msg:
        record.k8s_skip = True  # kopf's posting handler leaves such records alone
    return True


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own arena (up to 8 per core); with kopf's worker
    threads that multiplies the resident memory for no gain. Same as MALLOC_ARENA_MAX=2."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


def _webhooks(port: int, served: bool, register: bool, cert_dir: str | None,
              addr: str | None = None) -> Webhooks | None:
    if not served:
        return None
    if cert_dir:  # in a cluster: the chart mounts the certificate and owns the configurations
        return Webhooks(port=port or 9443, certdir=Path(cert_dir), addr=addr or "0.0.0.0", register=False)
    try:  # development: a certificate made here, by the development tools
        from kiln_dev.certs import serving_certificate
    except ImportError:
        raise SystemExit("kiln run: without --webhook-cert-dir the webhooks need a certificate made by the "
                         "development tools (pip install -e '.[dev]'); or --no-webhooks") from None
    state = Path(os.environ.get("KILN_OPERATOR_DIR") or Path.home() / ".local" / "state" / "kiln" / "operator")
    webhooks = Webhooks(port=port or free_port(), certdir=state / "webhook-certs", register=register,
                        addr=addr or HOST)
    serving_certificate(webhooks.certdir)
    return webhooks


def _lose_leadership(webhooks: Webhooks | None, reason: str) -> None:
    """Leadership lost (from the lease's thread): stop at once, before another replica may start
    reconciling; handlers in flight must not write any more. The container restarts as a follower."""
    logging.getLogger("kiln.leader").critical(f"leadership lost ({reason}): exiting")
    if webhooks is not None and webhooks.process is not None:
        webhooks.process.kill()
    logging.shutdown()
    os._exit(1)


def _follow(election: leader.LeaderElection, webhooks: Webhooks | None, liveness: str | None,
            stop: threading.Event) -> bool:
    """Until this replica leads (True) or is stopped (False): serve the webhooks only, and answer the
    liveness endpoint (kopf's is not up yet) so that the follower is Ready and gets its share of the
    admission reviews."""
    health = leader.HealthServer(liveness, lambda: webhooks is None or webhooks.alive) if liveness else None
    try:
        return election.acquire(stop)
    finally:
        if health is not None:
            health.close()  # kopf's endpoint takes the port over


async def _operate(rt: runtime.Runtime, namespaces: list[str], liveness: str | None, stop: threading.Event) -> None:
    """kopf, unless a signal came first. A signal that comes before kopf installs its own handlers
    stops it through its stop flag (an asyncio one: kopf waits for other kinds of flag in a thread,
    which would hold up the interpreter's exit)."""
    loop = asyncio.get_running_loop()
    flag = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(flag.set))
    if stop.is_set():
        return
    await kopf.operator(standalone=True, namespaces=namespaces, clusterwide=not namespaces,
                        liveness_endpoint=liveness, memo=kopf.Memo(runtime=rt), stop_flag=flag)


def run(namespaces: list[str], webhook_port: int = 0, webhooks: bool = True, register_webhooks: bool = True,
        webhook_cert_dir: str | None = None, liveness: str | None = None, webhook_addr: str | None = None,
        leader_election: bool = False, lease_name: str = "kiln-operator", lease_namespace: str | None = None,
        lease_duration: int = 15, webhook_drain: float = 0.0, metrics_port: int = 0, metrics_addr: str = HOST,
        webhook_metrics_port: int = 0, log_format: str = "text") -> int:
    """Run the operator until interrupted, against the current kubeconfig (or in-cluster config).

    With ``leader_election`` the process serves its webhooks at once and reconciles only while it holds
    the Lease (:mod:`kiln.leader`); it releases the Lease when it stops, after kopf has, and keeps
    serving the webhooks ``webhook_drain`` seconds longer (while its pod leaves the Service).

    ``metrics_port``: this process's Prometheus ``/metrics`` on ``metrics_addr``; ``webhook_metrics_port``:
    the webhook server's (kiln.metrics). ``log_format``: text or json (kiln.logs)."""
    _limit_malloc_arenas()
    logs.configure(log_format)
    try:  # the webhook server reads them at every registration: a mistake stops the start, saying which
        registry.Settings.from_env()
    except ValueError as e:
        raise SystemExit(f"kiln run: {e}") from None
    logging.getLogger("kopf.objects").addFilter(_kopf_chatter)
    rt = runtime.Runtime(namespaces=tuple(namespaces),
                         webhooks=_webhooks(webhook_port, webhooks, register_webhooks, webhook_cert_dir,
                                            webhook_addr),
                         restart_parallelism=int(os.environ.get("KILN_RESTART_PARALLELISM", "8")))
    if rt.webhooks is not None:
        served = (f"--metrics-addr={metrics_addr}", f"--metrics-port={webhook_metrics_port}")
        rt.webhooks.server_args = (f"--log-format={log_format}", *(served if webhook_metrics_port else ()))
    if metrics_port:
        metrics.serve(metrics_port, metrics_addr)
    election = leader.LeaderElection.with_duration(lease_name, lease_namespace or kube.home_namespace(),
                                                   lease_duration) if leader_election else None
    # SIGTERM or SIGINT: stop following, or stop kopf (which also installs handlers of its own once it runs).
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if rt.webhooks is not None:
            rt.webhooks.start()
        if election is not None:
            if not _follow(election, rt.webhooks, liveness, stop):
                return 0
            election.start_renewing(functools.partial(_lose_leadership, rt.webhooks))
        metrics.LEADER.set(1)
        asyncio.run(_operate(rt, namespaces, liveness, stop))
    finally:
        metrics.LEADER.set(0)
        if election is not None:
            election.release()
        if rt.webhooks is not None:
            if webhook_drain > 0 and rt.webhooks.alive:
                logging.getLogger("kiln").info(f"serving the webhooks {webhook_drain:g}s more")
                threading.Event().wait(webhook_drain)
            rt.webhooks.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
