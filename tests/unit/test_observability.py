"""The metrics' bookkeeping (kiln.metrics) and the JSON log lines (kiln.logs), without a cluster."""

from __future__ import annotations

import json
import logging

import kopf
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kiln import logs, metrics


def samples(collector: metrics.Seen) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(generate_latest(registry).decode()) for s in fam.samples}


def test_gauges_count_what_the_reconciles_saw_and_forget_the_deleted() -> None:
    seen = metrics.Seen()
    seen.observe("workloads", "a", "w1", {"state": "Running"})
    seen.observe("workloads", "a", "w2", {"state": "Running"})
    seen.observe("workloads", "b", "w1", {"state": "Failed"})
    seen.observe("artifacts", "a", "x", {"lifecycle": "Registered"})
    seen.observe("deployments", "a", "prod", {"conditions": [
        {"type": "Ready", "status": "False"},
        {"type": "Approved", "status": "False", "reason": "AwaitingApproval",
         "lastTransitionTime": "2026-12-01T00:00:00Z"}]})
    got = samples(seen)
    assert got[("kiln_workloads", (("state", "Running"),))] == 2
    assert got[("kiln_workloads", (("state", "Failed"),))] == 1
    assert got[("kiln_workloads", (("state", "Stopped"),))] == 0  # every state has a series
    assert got[("kiln_artifacts", (("lifecycle", "Registered"),))] == 1
    assert got[("kiln_deployments", (("approved", "False"), ("ready", "False")))] == 1
    assert got[("kiln_deployment_ready", (("name", "prod"), ("namespace", "a")))] == 0
    assert got[("kiln_approval_pending_since_timestamp_seconds", (("name", "prod"), ("namespace", "a")))] == \
        1796083200.0
    assert got[("kiln_approvals_pending", ())] == 1
    # The same object observed again replaces what was seen; a deleted one is forgotten.
    seen.observe("workloads", "a", "w2", {"state": "Stopped"})
    seen.forget("deployments", "a", "prod")
    got = samples(seen)
    assert got[("kiln_workloads", (("state", "Running"),))] == 1
    assert got[("kiln_workloads", (("state", "Stopped"),))] == 1
    assert got[("kiln_approvals_pending", ())] == 0
    assert not [k for k in got if k[0] == "kiln_deployment_ready"]


def test_reconciling_counts_successes_errors_and_depth() -> None:
    def value(metric: str, **labels: str) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value(metric, labels) or 0.0

    total = "controller_runtime_reconcile_total"
    ok, err = (value(total, controller="artifact", result=r) for r in ("success", "error"))
    with metrics.reconciling("artifact"):
        assert value("workqueue_depth", name="artifact") == 1
    with pytest.raises(RuntimeError), metrics.reconciling("artifact"):
        raise RuntimeError("boom")
    assert value("workqueue_depth", name="artifact") == 0
    assert value("controller_runtime_reconcile_total", controller="artifact", result="success") == ok + 1
    assert value("controller_runtime_reconcile_total", controller="artifact", result="error") == err + 1
    assert value("controller_runtime_reconcile_time_seconds_count", controller="artifact") >= 2


def test_json_log_lines_name_the_object(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    try:
        body = kopf.Body({"apiVersion": "kiln.dev/v1alpha1", "kind": "Workload",
                          "metadata": {"name": "my-app", "namespace": "team-a", "uid": "u1"}})
        kopf.ObjectLogger(body=body, settings=kopf.OperatorSettings()).info("restarting 1 pod(s)")
        logging.getLogger("kiln.leader").warning("plain, about no object")
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("kiln").exception("failed")
    finally:
        logs.configure("text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    first, plain, failed = lines
    assert set(first) == {"time", "level", "logger", "kind", "namespace", "name", "message"}
    assert (first["level"], first["kind"], first["namespace"], first["name"], first["message"]) == (
        "info", "Workload", "team-a", "my-app", "restarting 1 pod(s)")
    assert first["time"].endswith("Z") and first["logger"] == "kopf.objects"
    assert set(plain) == {"time", "level", "logger", "message"} and plain["level"] == "warning"
    assert failed["message"] == "failed" and "ValueError: bad" in failed["exception"]
