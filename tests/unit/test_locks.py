"""kiln.kube.Locks: one reconcile of an object at a time, and no lock kept once nobody uses it."""

from __future__ import annotations

import threading

from kiln import kube

LOCKS = kube.Locks()


def test_serialises_one_key_and_forgets_it_afterwards() -> None:
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with LOCKS.of("workload", "ns", "a"):
            inside.set()
            release.wait(10)
            order.append("first")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(10)
    def second() -> None:
        with LOCKS.of("workload", "ns", "a"):
            order.append("second")

    waiter = threading.Thread(target=second)
    waiter.start()
    with LOCKS.of("workload", "ns", "b"):  # another key is not held up
        order.append("other")
    assert "second" not in order  # a holds it
    release.set()
    t.join(10)
    waiter.join(10)
    assert order == ["other", "first", "second"]
    assert ("workload", "ns", "a") not in LOCKS.held and ("workload", "ns", "b") not in LOCKS.held


def test_released_on_error() -> None:
    try:
        with LOCKS.of("deployment", "ns", "c"):
            raise RuntimeError("reconcile failed")
    except RuntimeError:
        pass
    assert ("deployment", "ns", "c") not in LOCKS.held
    with LOCKS.of("deployment", "ns", "c"):  # not left held
        pass
