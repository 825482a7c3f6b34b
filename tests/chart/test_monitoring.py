"""Monitoring, rendered and checked without a cluster: the metrics Service, ports and arguments; the
ServiceMonitor and PrometheusRule (only where the cluster serves prometheus-operator's API); the alerts
(charts/kiln/files/alerts.yaml: promtool check and unit tests) and the Grafana dashboard's queries, all
against the metrics the operator and its webhook server expose (METRICS)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART, REPO, Helm, Obj, container, one

NS = "kiln-system"
ALERTS = CHART / "files" / "alerts.yaml"
ALERTS_TEST = Path(__file__).with_name("alerts-test.yaml")
DASHBOARD = REPO / "deploy" / "grafana" / "kiln-dashboard.json"
OPERATIONS = REPO / "docs" / "operations.md"
RUNBOOK = "https://github.com/kiln-dev/kiln/blob/main/docs/operations.md#"
MONITORING = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
              "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
# The thresholds the PrometheusRule template substitutes: alert -> (in files/alerts.yaml, value).
THRESHOLDS = {"KilnWebhookLatencyHigh": "> 0.5", "KilnWorkqueueBacklog": "> 20"}


def _histogram(name: str, labels: set[str]) -> dict[str, set[str]]:
    return {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}


# The contract: what the operator (/metrics on --metrics-port) and the webhook server (on
# --webhook-metrics-port) expose, with their labels. The alerts and the dashboard use these only.
METRICS: dict[str, set[str]] = {
    # the operator
    "controller_runtime_reconcile_total": {"controller", "result"},
    "controller_runtime_reconcile_errors_total": {"controller"},
    **_histogram("controller_runtime_reconcile_time_seconds", {"controller"}),
    "workqueue_depth": {"name"},
    "kiln_leader": set(),
    "kiln_workloads": {"state"},
    "kiln_artifacts": {"lifecycle"},
    "kiln_deployments": {"ready", "approved"},
    "kiln_deployment_ready": {"namespace", "name"},
    "kiln_approval_pending_since_timestamp_seconds": {"namespace", "name"},
    "kiln_approvals_pending": set(),
    "kiln_draft_restarts_total": set(),
    "kiln_drift_reverts_total": {"kind"},
    # the webhook server
    "controller_runtime_webhook_requests_total": {"webhook", "code"},
    **_histogram("controller_runtime_webhook_latency_seconds", {"webhook"}),
    "controller_runtime_webhook_requests_in_flight": {"webhook"},
    # prometheus_client's defaults, in both processes
    "process_cpu_seconds_total": set(),
    "process_resident_memory_bytes": set(),
    "process_virtual_memory_bytes": set(),
    "process_start_time_seconds": set(),
    "process_open_fds": set(),
    "process_max_fds": set(),
    "python_info": {"implementation", "major", "minor", "patchlevel", "version"},
    "python_gc_objects_collected_total": {"generation"},
    "python_gc_objects_uncollectable_total": {"generation"},
    "python_gc_collections_total": {"generation"},
    # Prometheus's own, one per target
    "up": set(),
}
# What Prometheus adds to every series of a target of the chart's ServiceMonitor (prometheus-operator's
# target labels; namespace is the target's unless the series has its own: honorLabels).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}


# --- PromQL, read without a parser ---------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers that are neither functions, aggregations,
    keywords, label names nor numbers)."""
    e = _STRING.sub('""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = _GROUPING.sub(" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1).lower() not in _KEYWORDS:
            names.add(m.group(1))
    return names


def label_names(expr: str) -> set[str]:
    """The label names an expression matches on or groups by."""
    e = _STRING.sub('""', expr)
    labels = {name.strip() for group in _GROUPING.findall(e) for name in group.split(",") if name.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", e):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return labels


def _known(expr: str, where: str, used_labels: set[str] | None = None) -> None:
    """Every metric of expr is in METRICS, and every label it (or used_labels) names is on one of them."""
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - METRICS.keys()
    assert not unknown, f"{where}: {sorted(unknown)} are not metrics Kiln exposes (METRICS): {expr!r}"
    available = set().union(*(METRICS[n] for n in names)) | TARGET_LABELS
    wrong = (label_names(expr) | (used_labels or set())) - available
    assert not wrong, f"{where}: labels {sorted(wrong)} are on none of {sorted(names)}: {expr!r}"


def test_the_promql_reader_finds_metrics_and_labels() -> None:
    expr = ('sum by (controller, le) (rate(foo_seconds_bucket{job="kiln", webhook=~"a|b"}[5m] offset 1m)) / on () '
            'group_left (x) bar_total > bool 1e3 and time() - absent(up{job="a{b}"} == 1) unless inf')
    assert metric_names(expr) == {"foo_seconds_bucket", "bar_total", "up"}
    assert label_names(expr) == {"controller", "le", "job", "webhook", "x"}
    with pytest.raises(AssertionError, match="kiln_leaders"):
        _known('sum(kiln_leaders{job="kiln"})', "typo")
    with pytest.raises(AssertionError, match="controler"):
        _known('sum by (controler) (controller_runtime_reconcile_total{job="kiln"})', "typo")
    _known('sum by (namespace, result) (controller_runtime_reconcile_total{job="kiln"})', "fine")


def test_the_contract_is_what_kiln_metrics_exposes() -> None:
    """METRICS (Kiln's own, names and labels) are kiln.metrics' (the operator's and the webhook server's),
    and prometheus_client's process_* and python_* ones are there."""
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    from kiln import metrics

    exposed: dict[str, set[str]] = {}
    for m in vars(metrics).values():
        if isinstance(m, MetricWrapperBase):
            # prometheus_client has no public accessor for a metric's name, labels and type.
            name, labels = m._name, set(m._labelnames)
            suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[m._type]
            for suffix in suffixes:
                exposed[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    seen = metrics.Seen()
    seen.observe("workloads", "team-a", "w", {"state": "Running"})
    seen.observe("artifacts", "team-a", "a", {"lifecycle": "Draft"})
    seen.observe("deployments", "team-a", "d", {"conditions": [
        {"type": "Ready", "status": "False"},
        {"type": "Approved", "status": "False", "reason": "AwaitingApproval",
         "lastTransitionTime": "2030-01-01T00:00:00Z"}]})
    for family in seen.collect():
        assert family.samples, family.name
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).update(sample.labels)
    own = {n: labels for n, labels in METRICS.items() if not n.startswith(("process_", "python_")) and n != "up"}
    assert exposed == own
    defaults = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    assert {n for n in METRICS if n.startswith(("process_", "python_"))} <= defaults


# --- promtool ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> Path:
    """Debian's promtool (package prometheus, which hack/install-node-packages.sh installs): missing,
    the monitoring tests fail rather than skip."""
    exe = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    assert exe, "promtool is missing: install Debian's prometheus package (make setup)"
    return Path(exe)


def _promtool(exe: Path, *args: str, cwd: Path | None = None) -> str:
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert r.returncode == 0, f"promtool {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _rules_file(tmp_path: Path, name: str, groups: list[Obj]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def _alerts() -> list[Obj]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert isinstance(groups, list) and groups
    return groups


def _rules(groups: list[Obj]) -> list[Obj]:
    return [rule for group in groups for rule in group["rules"]]


# --- the metrics Service, ports and arguments ------------------------------------------------------------


def _arg(args: list[str], flag: str) -> str | None:
    """The value following flag in the container's args (None: absent)."""
    if flag not in args:
        return None
    assert args.count(flag) == 1, f"{flag} given twice: {args}"
    return args[args.index(flag) + 1]


def test_metrics_service_ports_and_args_by_default(helm: Helm) -> None:
    objs = helm.objects()
    c = container(objs)
    args = c["args"]
    assert (_arg(args, "--metrics-addr"), _arg(args, "--metrics-port"), _arg(args, "--webhook-metrics-port")) == (
        "$(POD_IP)", "8081", "8082")
    assert {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}["POD_IP"] \
        == "status.podIP", "--metrics-addr=$(POD_IP) needs the POD_IP variable"
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert ports["metrics"] == (8081, "TCP") and ports["webhook-metrics"] == (8082, "TCP")
    assert len({p for p, _ in ports.values()}) == len(ports), f"the container's ports differ: {ports}"

    svc = one(objs, "Service", "kiln-metrics")
    assert svc["metadata"]["namespace"] == NS
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"},
        {"name": "webhook-metrics", "port": 8082, "targetPort": "webhook-metrics", "protocol": "TCP"}]
    assert svc["metadata"]["labels"]["kiln.dev/metrics"] == "true"
    assert "kiln.dev/metrics" not in one(objs, "Service", "kiln-webhook")["metadata"]["labels"], \
        "the ServiceMonitor must not select the webhook Service"


def test_metrics_ports_follow_the_values(helm: Helm) -> None:
    objs = helm.objects("--set", "metrics.port=9100", "--set", "metrics.webhookPort=9101")
    args = container(objs)["args"]
    assert (_arg(args, "--metrics-port"), _arg(args, "--webhook-metrics-port")) == ("9100", "9101")
    ports = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    assert (ports["metrics"], ports["webhook-metrics"]) == (9100, 9101)
    assert [(p["port"], p["targetPort"]) for p in one(objs, "Service", "kiln-metrics")["spec"]["ports"]] == [
        (9100, "metrics"), (9101, "webhook-metrics")]


@pytest.mark.parametrize(("values", "clash"), [
    (["--set", "metrics.port=8080"], "liveness.port and metrics.port are both 8080"),
    (["--set", "metrics.webhookPort=9443"], "metrics.webhookPort and webhooks.port are both 9443"),
    (["--set", "metrics.webhookPort=8081"], "metrics.port and metrics.webhookPort are both 8081"),
])
def test_the_containers_ports_must_differ(helm: Helm, values: list[str], clash: str) -> None:
    r = helm.run("template", "kiln", str(CHART), *values, check=False)
    assert r.returncode != 0 and clash in r.stderr, r.stderr
    # Ports of what is off do not count.
    helm.objects("--set", "webhooks.enabled=false", "--set", "metrics.port=9443", "--set", "metrics.webhookPort=8080")


@pytest.mark.parametrize("values", [
    ["--set", "metrics.bogus=1"],
    ["--set", "metrics.port=80"],
    ["--set", "metrics.webhookPort=70000"],
    ["--set", "metrics.serviceMonitor.interval=soon"],
    ["--set", "metrics.serviceMonitor.interval=1.5m"],
    ["--set", "metrics.serviceMonitor.labels.release=1"],
    ["--set", "metrics.serviceMonitor.bogus=1"],
    ["--set-json", "metrics.prometheusRule.webhookLatencyBudgetSeconds=0"],
    ["--set", "metrics.prometheusRule.webhookLatencyBudgetSeconds=fast"],
    ["--set", "metrics.prometheusRule.bogus=1"],
], ids=lambda v: v[1])
def test_values_schema_rejects_bad_metrics_values(helm: Helm, values: list[str]) -> None:
    r = helm.run("template", "kiln", str(CHART), *values, check=False)
    assert r.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in r.stderr, r.stderr


@pytest.mark.parametrize(("values", "expected"), [
    ([], {"metrics_addr": "$(POD_IP)", "metrics_port": 8081, "webhook_metrics_port": 8082}),
    (["--set", "metrics.enabled=false"], {"metrics_addr": "127.0.0.1", "metrics_port": 0, "webhook_metrics_port": 0}),
], ids=["defaults", "disabled"])
def test_the_operator_takes_the_metrics_arguments(helm: Helm, monkeypatch: pytest.MonkeyPatch, values: list[str],
                                                  expected: dict[str, object]) -> None:
    """`kiln run` with the container's args (the image's ENTRYPOINT is kiln run): what kiln.main.run gets."""
    from kiln import cli, main

    seen: dict[str, object] = {}
    monkeypatch.setattr(main, "run", lambda **kw: seen.update(kw) or 0)
    assert cli.main(["run", *container(helm.objects(*values))["args"]]) == 0
    assert {k: seen[k] for k in expected} == expected


def test_webhook_metrics_only_with_webhooks(helm: Helm) -> None:
    objs = helm.objects("--set", "webhooks.enabled=false", *MONITORING)
    c = container(objs)
    assert _arg(c["args"], "--metrics-port") == "8081" and _arg(c["args"], "--metrics-addr") == "$(POD_IP)"
    assert "--webhook-metrics-port" not in c["args"]
    assert {p["name"] for p in c["ports"]} == {"healthz", "metrics"}
    assert [p["name"] for p in one(objs, "Service", "kiln-metrics")["spec"]["ports"]] == ["metrics"]
    assert [e["port"] for e in one(objs, "ServiceMonitor")["spec"]["endpoints"]] == ["metrics"]
    one(objs, "PrometheusRule")


def test_nothing_of_metrics_when_disabled(helm: Helm) -> None:
    objs = helm.objects("--set", "metrics.enabled=false", *MONITORING)
    c = container(objs)
    assert not [a for a in c["args"] if "metrics" in a], c["args"]
    assert {p["name"] for p in c["ports"]} == {"webhook", "healthz"}
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Service"] == ["kiln-webhook"]
    assert not [o for o in objs if o["apiVersion"].startswith("monitoring.coreos.com/")]


@pytest.mark.parametrize(("values", "expected"), [
    ([], []),
    (["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"], ["ServiceMonitor"]),
    (["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"], ["PrometheusRule"]),
    (MONITORING, ["PrometheusRule", "ServiceMonitor"]),
    ([*MONITORING, "--set", "metrics.serviceMonitor.enabled=false"], ["PrometheusRule"]),
    ([*MONITORING, "--set", "metrics.prometheusRule.enabled=false"], ["ServiceMonitor"]),
    (["--api-versions", "monitoring.coreos.com/v1alpha1/ServiceMonitor"], []),
], ids=["no-api", "servicemonitor-api", "prometheusrule-api", "both-apis", "servicemonitor-off",
        "prometheusrule-off", "other-version"])
def test_servicemonitor_and_prometheusrule_need_their_api(helm: Helm, values: list[str],
                                                          expected: list[str]) -> None:
    objs = helm.objects(*values)
    assert sorted(o["kind"] for o in objs if o["apiVersion"] == "monitoring.coreos.com/v1") == expected
    assert one(objs, "Service", "kiln-metrics"), "the Service is there either way"


def test_servicemonitor_scrapes_both_processes_as_job_kiln(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"metrics": {"serviceMonitor": {"interval": "15s",
                                                                      "labels": {"release": "prom"}}}}))
    objs = helm.objects(*MONITORING, "-f", str(values))
    sm = one(objs, "ServiceMonitor", "kiln")
    assert sm["metadata"]["namespace"] == NS and sm["metadata"]["labels"]["release"] == "prom"
    spec = sm["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NS]}
    assert "jobLabel" not in spec, "the job label comes from the relabelings"
    selector = spec["selector"]["matchLabels"]
    svc_labels = one(objs, "Service", "kiln-metrics")["metadata"]["labels"]
    assert selector.items() <= svc_labels.items(), "selects the metrics Service"
    assert not selector.items() <= one(objs, "Service", "kiln-webhook")["metadata"]["labels"].items()
    svc_ports = [p["name"] for p in one(objs, "Service", "kiln-metrics")["spec"]["ports"]]
    assert [e["port"] for e in spec["endpoints"]] == svc_ports == ["metrics", "webhook-metrics"]
    for e in spec["endpoints"]:
        assert (e["path"], e["scheme"], e["interval"]) == ("/metrics", "http", "15s"), e
        # The per-object series' own namespace label (the governed Deployment's) is kept.
        assert e["honorLabels"] is True, e
        writes_job = [r for r in e["relabelings"] if r.get("targetLabel") == "job"]
        assert writes_job and writes_job[-1] == {"action": "replace", "targetLabel": "job", "replacement": "kiln"}, \
            f"the last relabeling of job sets it to kiln, whatever the source labels: {e['relabelings']}"
    assert one(helm.objects(*MONITORING), "ServiceMonitor")["spec"]["endpoints"][0]["interval"] == "30s"


# --- the PrometheusRule is files/alerts.yaml ---------------------------------------------------------------


def _with_thresholds(groups: list[Obj], budget: str, workers: str) -> list[Obj]:
    out = copy.deepcopy(groups)
    new = {"KilnWebhookLatencyHigh": f"> {budget}", "KilnWorkqueueBacklog": f"> {workers}"}
    for rule in _rules(out):
        if rule.get("alert") in THRESHOLDS:
            assert rule["expr"].count(THRESHOLDS[rule["alert"]]) == 1, rule["expr"]
            rule["expr"] = rule["expr"].replace(THRESHOLDS[rule["alert"]], new[rule["alert"]])
    return out


def test_prometheusrule_groups_are_the_alerts_file(helm: Helm) -> None:
    objs = helm.objects(*MONITORING, "--set", "metrics.prometheusRule.labels.release=prom")
    rule = one(objs, "PrometheusRule", "kiln")
    assert rule["metadata"]["namespace"] == NS and rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == {"groups": _alerts()}


@pytest.mark.parametrize(("budget", "workers", "budget_text", "workers_text"), [
    (0.25, 7, "0.25", "7"),
    (2, 64, "2", "64"),
    (0.001, 20, "0.001", "20"),
])
def test_prometheusrule_substitutes_the_budget_and_the_workers(helm: Helm, tmp_path: Path, budget: float,
                                                              workers: int, budget_text: str,
                                                              workers_text: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"workers": workers,
                                      "metrics": {"prometheusRule": {"webhookLatencyBudgetSeconds": budget}}}))
    groups = one(helm.objects(*MONITORING, "-f", str(values)), "PrometheusRule")["spec"]["groups"]
    assert groups == _with_thresholds(_alerts(), budget_text, workers_text)
    exprs = {r["alert"]: r["expr"] for r in _rules(groups)}
    assert exprs["KilnWebhookLatencyHigh"].rstrip().endswith(f"> {budget_text}")
    assert exprs["KilnWorkqueueBacklog"].rstrip().endswith(f"> {workers_text}")


def test_rendered_prometheusrule_passes_promtool(helm: Helm, promtool: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"workers": 7, "metrics": {"prometheusRule": {
        "webhookLatencyBudgetSeconds": 0.001}}}))
    for name, args in (("default.yaml", []), ("substituted.yaml", ["-f", str(values)])):
        groups = one(helm.objects(*MONITORING, *args), "PrometheusRule")["spec"]["groups"]
        out = _promtool(promtool, "check", "rules", str(_rules_file(tmp_path, name, groups)))
        assert f"SUCCESS: {len(_rules(_alerts()))} rules found" in out, out
    # The rendered rules (defaults) behave as the file's: the unit tests, on them.
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    tests["rule_files"] = ["default.yaml"]
    (tmp_path / "alerts-test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    _promtool(promtool, "test", "rules", "alerts-test.yaml", cwd=tmp_path)


# --- the alerts ------------------------------------------------------------------------------------------


def test_alerts_file_passes_promtool_check(promtool: Path) -> None:
    out = _promtool(promtool, "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(_rules(_alerts()))} rules found" in out, out


def test_alerts_unit_tests_pass(promtool: Path) -> None:
    out = _promtool(promtool, "test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in out, out


def test_every_alert_has_cases_that_fire_and_cases_that_must_not() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert [str((ALERTS_TEST.parent / f).resolve()) for f in tests["rule_files"]] == [str(ALERTS.resolve())]
    fire: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fire if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in _rules(_alerts())}
    assert alerts - fire == set(), "alerts without a case that fires"
    assert alerts - quiet == set(), "alerts without a case that must not fire"
    assert fire | quiet <= alerts, "cases of unknown alerts"


def test_alerts_are_documented_and_labelled() -> None:
    doc = OPERATIONS.read_text()
    assert "\n## Alerts\n" in doc, "docs/operations.md has an Alerts section"
    section = doc.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^### (\w+)$", section, re.M)
    rules = _rules(_alerts())
    assert all("alert" in r for r in rules), "alerts only: no recording rules in files/alerts.yaml"
    assert documented == [r["alert"] for r in rules], "one heading per alert, in the file's order"
    for r in rules:
        name = r["alert"]
        assert re.fullmatch(r"Kiln[A-Z]\w+", name), name
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert set(r["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert r["annotations"]["runbook_url"] == RUNBOOK + name.lower(), name
        assert 'job="kiln"' in r["expr"] and "job=~" not in r["expr"], f"{name} selects job kiln"
        used = set(re.findall(r"\$labels\.(\w+)", r["annotations"]["summary"] + r["annotations"]["description"]))
        _known(r["expr"], name, used)


def test_alerts_use_only_the_metrics_kiln_exposes() -> None:
    used: set[str] = set()
    for r in _rules(_alerts()):
        _known(r["expr"], r["alert"])
        used |= metric_names(r["expr"])
    assert {"up", "kiln_leader", "kiln_deployment_ready", "controller_runtime_webhook_latency_seconds_bucket"} <= used


# --- the Grafana dashboard -------------------------------------------------------------------------------


def _dashboard() -> Obj:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[Obj]) -> list[Obj]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels", [])))
    return out


def _queries() -> list[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query of the dashboard."""
    return [(p["title"], t["expr"], t.get("legendFormat", "")) for p in _panels(_dashboard()["panels"])
            for t in p.get("targets", [])]


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _promql(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"an unknown Grafana variable: {expr!r}"
    return expr


def test_dashboard_queries_are_valid_promql(promtool: Path, tmp_path: Path) -> None:
    queries = _queries()
    assert len(queries) >= 25, len(queries)
    rules = [{"record": f"kiln_dashboard:query_{i}", "expr": _promql(expr)} for i, (_, expr, _) in enumerate(queries)]
    path = _rules_file(tmp_path, "dashboard.yaml", [{"name": "dashboard", "rules": rules}])
    out = _promtool(promtool, "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out, out


def test_dashboard_uses_only_the_metrics_kiln_exposes_and_shows_them_all() -> None:
    used: set[str] = set()
    for title, expr, legend in _queries():
        assert 'job="kiln"' in expr, f"{title}: select job kiln: {expr!r}"
        _known(_promql(expr), title, set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)))
        used |= metric_names(_promql(expr))
    shown = {n for n in METRICS if not n.startswith(("python_", "process_"))
             and not n.endswith(("_sum", "_count"))}
    assert shown - used == set(), "metrics the dashboard does not show"
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= used


def test_dashboard_takes_its_prometheus_as_a_variable() -> None:
    d = _dashboard()
    assert 36 <= d["schemaVersion"] <= 41 and d["uid"] and d["title"] == "Kiln"
    (var,) = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
    assert (var["type"], var["query"]) == ("datasource", "prometheus")
    panels = _panels(d["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    want = {"type": "prometheus", "uid": "${datasource}"}
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"] == want, p["title"]
            assert p["targets"] and all(t["datasource"] == want for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    assert not [e for _, e, _ in _queries() if "datasource" in e]
