"""The operator observed the way platform teams observe it: a real Prometheus (Debian's, started here on
127.0.0.1) scrapes the metrics endpoints of the operator and of its webhook server, and PromQL queries
rise as the tutorial's steps run."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.admission.process import free_port
from tests.integration.test_deployments import deployment, wait_ready
from tests.integration.test_registration import register
from tests.integration.test_workloads import container, create, patch, wait_running, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "kiln-dashboard.json"


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector (an error answer fails the test)."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"]) if answer["data"]["resultType"] == "vector" else [answer["data"]]

    def value(self, promql: str) -> float | None:
        """The value of a query that gives one series, or None when it gives none."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(kube: Kube, operator: Operator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping the session operator's two endpoints every second, as job kiln."""
    exe = shutil.which("prometheus")
    assert exe, "Debian's prometheus package is needed (make setup installs it)"
    d = tmp_path_factory.mktemp("prometheus")
    targets = [f"127.0.0.1:{operator.port_of(flag)}" for flag in ("--metrics-port", "--webhook-metrics-port")]
    (d / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "kiln", "static_configs": [{"targets": targets}]}]}))
    port = free_port()
    log = d / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return len([s for s in prom.query('up{job="kiln"} == 1')]) == 2
            except OSError:
                return False
        kube.wait(up, what="Prometheus scraping both endpoints", timeout=60)
        yield prom
    finally:
        proc.terminate()
        proc.wait(30)


def rises(kube: Kube, prom: Prometheus, promql: str, above: float, what: str) -> float:
    return kube.wait(lambda: (v := prom.value(promql)) is not None and v > above and v, what=what, timeout=60)


def test_prometheus_sees_the_tutorial(kube: Kube, operator: Operator, prometheus: Prometheus,
                                      namespace: str) -> None:
    prom, ns = prometheus, namespace
    assert prom.value('sum(kiln_leader{job="kiln"})') == 1  # kiln run leads: it reconciles
    reconciles = 'sum(controller_runtime_reconcile_total{job="kiln", controller="workload"})'
    restarts = 'sum(kiln_draft_restarts_total{job="kiln"})'
    registrations = 'sum(controller_runtime_webhook_requests_total{job="kiln", webhook="record-registration"})'
    before = {q: prom.value(q) or 0.0 for q in (reconciles, restarts, registrations)}

    # Step 1: a Workload with an inline artifact runs.
    create(kube, ns, workload("my-app", inline=[container()]))
    wait_running(kube, ns, "my-app")
    rises(kube, prom, reconciles, before[reconciles], "workload reconciles counted")
    running = 'sum(kiln_workloads{job="kiln", state="Running"})'
    rises(kube, prom, running, 0, "a Running workload")
    # Step 2b: a change of its Draft restarts it.
    patch(kube, ns, "artifacts", "my-app", {"spec": {"containers": [container(env=[{"name": "V", "value": "2"}])]}})
    rises(kube, prom, restarts, before[restarts], "a restart caused by a Draft change")
    # Step 3: registration goes through the webhook server, which counts it.
    register(kube, ns, "my-app")
    rises(kube, prom, registrations, before[registrations], "the registration webhook's requests")
    assert prom.value('sum(controller_runtime_webhook_requests_total{job="kiln", webhook="record-registration", '
                      'code!="200"})') in (None, 0.0)
    # Step 4: a governed Deployment, Ready.
    create(kube, ns, deployment("prod", artifact_ref="my-app"))
    wait_ready(kube, ns, "prod")
    rises(kube, prom, f'max(kiln_deployment_ready{{job="kiln", namespace="{ns}", name="prod"}})', 0,
          "the Deployment Ready")
    # Latency histograms give quantiles (once two scrapes have seen them rise).
    def p99(histogram: str) -> float:
        q = f"histogram_quantile(0.99, sum by (le) (rate({histogram}[5m])))"
        return kube.wait(lambda: (v := prom.value(q)) is not None and v == v and v, what=q, timeout=30)  # not NaN

    assert 0 < p99('controller_runtime_reconcile_time_seconds_bucket{job="kiln", controller="workload"}') < 60
    assert 0 < p99('controller_runtime_webhook_latency_seconds_bucket{job="kiln"}') < 10
    # Both processes report themselves too.
    assert len(prom.query('process_resident_memory_bytes{job="kiln"}')) == 2


def test_every_dashboard_query_runs(prometheus: Prometheus) -> None:
    """The Grafana dashboard's queries are PromQL this Prometheus accepts (and most have data)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
    assert len(exprs) >= 10
    for expr in exprs:
        concrete = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("${job}", "kiln")
        prometheus.query(concrete)  # an invalid query fails here, with Prometheus's message
