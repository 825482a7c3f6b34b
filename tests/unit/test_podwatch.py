"""kiln.controllers.podwatch: which pod events reach their Workload, and how often. (The watch itself
runs against the real API server in every integration test: each Workload's readiness comes through it.)"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from kiln.controllers.cache import Indexes
from kiln.controllers.podwatch import PodWatch, _lines, matters

LOG: Any = logging.getLogger("test")


def pod(uid: str, wl: str = "w", phase: str = "Pending", ready: bool = False, node: str = "") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": "ns", "name": f"p-{uid}", "labels": {"kiln.dev/workload": wl},
                         "ownerReferences": [{"uid": "u", "controller": True}]},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class Later:
    """An executor that keeps what is submitted until :meth:`run`."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], Any]] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.jobs.append(lambda: fn(*args))

    def run(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


def watch() -> tuple[PodWatch, list[tuple[str, str]], Later]:
    calls: list[tuple[str, str]] = []
    w = PodWatch(Indexes.empty().pods, (), lambda ns, name: calls.append((ns, name)), LOG, 60)
    executor = Later()
    # Not started (no threads): the dispatching alone, into an executor that runs when told.
    w._executor, w._context = executor, contextvars.copy_context()
    return w, calls, executor


def test_a_new_pod_waiting_to_start_and_events_that_change_nothing_reach_no_one() -> None:
    w, calls, ex = watch()
    w.dispatch("ADDED", pod("1"))
    w.dispatch("MODIFIED", pod("1", node="n1"))  # scheduled: nothing the Workload shows
    ex.run()
    assert calls == []


def test_readiness_failure_and_deletion_reach_the_workload() -> None:
    w, calls, ex = watch()
    w.dispatch("ADDED", pod("1"))
    w.dispatch("MODIFIED", pod("1", phase="Running", ready=True))
    ex.run()
    w.dispatch("MODIFIED", pod("1", phase="Failed"))
    ex.run()
    w.dispatch("DELETED", pod("1", phase="Failed"))
    ex.run()
    assert calls == [("ns", "w")] * 3


def test_events_that_come_while_a_reconcile_waits_are_covered_by_it() -> None:
    w, calls, ex = watch()
    for i in range(5):
        w.dispatch("ADDED", pod(str(i), phase="Running", ready=True))
    w.dispatch("ADDED", pod("9", wl="other", phase="Running", ready=True))
    assert len(ex.jobs) == 2, "one reconcile waiting per Workload"
    ex.run()
    assert sorted(calls) == [("ns", "other"), ("ns", "w")]
    w.dispatch("MODIFIED", pod("1", phase="Running", ready=False))
    ex.run()
    assert calls[-1] == ("ns", "w"), "once started, the next change queues another"


def test_a_failing_reconcile_is_logged_and_the_next_event_retries() -> None:
    def fail(ns: str, name: str) -> None:
        raise RuntimeError("API down")

    w = PodWatch(Indexes.empty().pods, (), fail, LOG, 60)
    ex = Later()
    w._executor, w._context = ex, contextvars.copy_context()
    w.dispatch("ADDED", pod("1", phase="Running", ready=True))
    ex.run()
    w.dispatch("DELETED", pod("1"))
    assert len(ex.jobs) == 1


def test_matters() -> None:
    from kiln.controllers.cache import pod_view

    new, running = pod_view(pod("1")), pod_view(pod("1", phase="Running", ready=True))
    assert not matters(None, new) and not matters(new, new)
    assert matters(new, running) and matters(running, None) and matters(None, running)


def test_a_watch_stream_is_read_a_line_at_a_time_across_chunks() -> None:
    class Reply:
        def stream(self, amt: Any, decode_content: bool) -> Any:
            yield from (b'{"a":', b'1}\n{"b":2}\n', b'\n{"c"', b":3}")

    assert list(_lines(Reply())) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
