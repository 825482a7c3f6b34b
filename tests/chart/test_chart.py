"""The Helm chart, rendered (no cluster): CRDs, schema, lint, webhooks equal to the operator's, RBAC,
the pod's hardening, and the image it runs (Dockerfile, hadolint)."""

from __future__ import annotations

import base64
import datetime
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from kiln.admission.configuration import webhook_configurations
from tests.chart.conftest import BIN, CHART, REPO, Helm, Obj, container, kinds, one

NS = "kiln-system"


# --- CRDs, lint, schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("copy", [CHART / "crds", REPO / "deploy" / "kustomize" / "base" / "crds"],
                         ids=["chart", "kustomize"])
def test_crds_are_byte_for_byte_those_of_crds_dir(copy: Path) -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    copied = {p.name: p.read_bytes() for p in copy.glob("*")}
    assert copied.keys() == source.keys(), "run `make manifests`"
    for name, data in source.items():
        assert copied[name] == data, f"{copy.relative_to(REPO)}/{name} differs from crds/{name}: run `make manifests`"


@pytest.mark.parametrize("values", [
    [],
    ["--set", "certManager.enabled=true"],
    ["--set", "certManager.enabled=true", "--set", "certManager.issuerRef.name=corp-ca",
     "--set", "certManager.issuerRef.kind=ClusterIssuer"],
    ["--set", "webhooks.enabled=false", "--set", "watchNamespaces={team-a,team-b}"],
    ["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=kiln", "--set", "rbac.create=false"],
], ids=["defaults", "cert-manager", "issuer-ref", "no-webhooks", "own-sa"])
def test_helm_lint_strict(helm: Helm, values: list[str]) -> None:
    out = helm.run("lint", "--strict", str(CHART), *values).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize(("values", "complaint"), [
    (["--set", "bogus=1"], "bogus"),
    (["--set", "image.bogus=1"], "bogus"),
    (["--set", "webhooks.failurePolicy=Ignore"], "failurePolicy"),
    (["--set", "webhooks.port=80"], "port"),
    (["--set", "image.digest=latest"], "digest"),
    (["--set", "certManager.issuerRef.kind=Issuer"], "name"),
    (["--set", "watchNamespaces={Not_A_Namespace}"], "watchNamespaces"),
    (["--set", "resources.requsts.cpu=1"], "requsts"),
    (["--set", "replicaCount=0"], "replicaCount"),
    (["--set", "leaderElection.leaseDuration=1"], "leaseDuration"),
    (["--set", "webhooks.bindAddress=pod-ip"], "bindAddress"),
])
def test_values_schema_rejects_what_it_does_not_know(helm: Helm, values: list[str], complaint: str) -> None:
    r = helm.run("template", "kiln", str(CHART), *values, check=False)
    assert r.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in r.stderr and complaint in r.stderr, r.stderr


def test_schema_covers_every_default_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(v: Any, s: dict[str, Any], path: str) -> None:
        if "$ref" in s:
            s = schema["definitions"][s["$ref"].rsplit("/", 1)[1]]
        if isinstance(v, dict) and s.get("properties"):
            assert s.get("additionalProperties") is False, f"{path or 'values'}: additionalProperties must be false"
            for k, sub in v.items():
                assert k in s["properties"], f"{path}.{k} is not in values.schema.json"
                walk(sub, s["properties"][k], f"{path}.{k}")

    walk(values, schema, "")


# --- the webhook configurations are the operator's -------------------------------------------------


def _python_configurations(ca: str | None) -> tuple[Obj, Obj]:
    cc: dict[str, Any] = {"service": {"name": "kiln-webhook", "namespace": NS, "port": 443}}
    if ca is not None:
        cc["caBundle"] = ca
    return webhook_configurations(cc, f"{NS}-kiln")


def test_webhook_configurations_equal_the_operators(helm: Helm) -> None:
    objs = helm.objects()
    ca = one(objs, "Secret", "kiln-webhook-tls")["data"]["ca.crt"]
    validating, mutating = _python_configurations(ca)
    for kind, want in (("ValidatingWebhookConfiguration", validating), ("MutatingWebhookConfiguration", mutating)):
        got = one(objs, kind)
        assert got["metadata"]["name"] == f"{NS}-kiln", "cluster-scoped names carry the release's namespace"
        assert [w["name"] for w in got["webhooks"]] == [w["name"] for w in want["webhooks"]]
        for g, w in zip(got["webhooks"], want["webhooks"], strict=True):
            assert g == w, f"{kind} webhook {w['name']} differs from kiln.admission.configuration"


def test_webhook_configurations_with_cert_manager(helm: Helm) -> None:
    objs = helm.objects("--set", "certManager.enabled=true")
    assert not [o for o in objs if o["kind"] == "Secret"], "cert-manager makes the Secret"
    validating, mutating = _python_configurations(None)
    for kind, want in (("ValidatingWebhookConfiguration", validating), ("MutatingWebhookConfiguration", mutating)):
        got = one(objs, kind)
        assert got["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NS}/kiln-webhook"}
        assert got["webhooks"] == want["webhooks"]
    cert = one(objs, "Certificate", "kiln-webhook")["spec"]
    assert cert["secretName"] == "kiln-webhook-tls"
    assert cert["dnsNames"] == [f"kiln-webhook.{NS}.svc", f"kiln-webhook.{NS}.svc.cluster.local"]
    assert cert["issuerRef"] == {"name": "kiln-webhook-ca", "kind": "Issuer", "group": "cert-manager.io"}
    ca = one(objs, "Certificate", "kiln-webhook-ca")["spec"]
    assert ca["isCA"] is True and ca["issuerRef"]["name"] == "kiln-selfsigned"
    assert one(objs, "Issuer", "kiln-webhook-ca")["spec"] == {"ca": {"secretName": "kiln-webhook-ca"}}
    assert one(objs, "Issuer", "kiln-selfsigned")["spec"] == {"selfSigned": {}}

    own = helm.objects("--set", "certManager.enabled=true", "--set", "certManager.issuerRef.name=corp-ca",
                       "--set", "certManager.issuerRef.kind=ClusterIssuer")
    assert [o["kind"] for o in own if o["apiVersion"].startswith("cert-manager.io")] == ["Certificate"]
    assert one(own, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_generated_certificate_serves_the_webhook_service(helm: Helm) -> None:
    objs = helm.objects()
    data = one(objs, "Secret", "kiln-webhook-tls")["data"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(data["ca.crt"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"kiln-webhook.{NS}.svc" in sans and f"kiln-webhook.{NS}.svc.cluster.local" in sans
    assert leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=3000)
    assert one(objs, "Service", "kiln-webhook")["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    annotations = one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/webhook-tls"]), "a new certificate restarts the pod"


def test_webhooks_can_be_limited_to_namespaces_or_disabled(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    selector = {"matchLabels": {"kiln.dev/enabled": "true"}}
    values.write_text(yaml.safe_dump({"webhooks": {"namespaceSelector": selector}}))
    objs = helm.objects("-f", str(values))
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert all(w["namespaceSelector"] == selector for w in one(objs, kind)["webhooks"])
    off = helm.objects("--set", "webhooks.enabled=false")
    policies = [o["kind"] for o in json.loads((CHART / "files" / "policies.json").read_text())]
    personas = ["ClusterRole"] * len(json.loads((CHART / "files" / "roles.json").read_text()))
    assert kinds(off) == sorted(["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Role",
                                 "RoleBinding", "Service", "ServiceAccount", *policies, *personas]), \
        "the admission policies (and the metrics Service) stay"
    assert container(off)["args"][0] == "--no-webhooks"


def _selectors(objs: list[Obj]) -> list[Any]:
    return [w.get("namespaceSelector") for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
            for w in one(objs, kind)["webhooks"]]


def test_webhooks_namespace_selector_follows_watch_namespaces(helm: Helm, tmp_path: Path) -> None:
    """A namespaced install's webhooks see its namespaces only (a fail-closed webhook of one install
    must not stand in the way of another namespace); an explicit selector wins."""
    assert set(map(str, _selectors(helm.objects()))) == {"None"}, "cluster-wide: every namespace"
    follows = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                     "values": ["team-a", "team-b"]}]}
    selectors = _selectors(helm.objects("--set", "watchNamespaces={team-a,team-b}"))
    assert selectors and all(s == follows for s in selectors), selectors
    explicit = {"matchLabels": {"kiln.dev/enabled": "true"}}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": ["team-a"], "webhooks": {"namespaceSelector": explicit}}))
    assert all(s == explicit for s in _selectors(helm.objects("-f", str(values))))

# --- RBAC --------------------------------------------------------------------------------------------

# Reviewed against operator/kiln/ and kopf 1.45 (reconcile: Kiln's own verb, see the status policy):
# tests/chart/test_rbac.py runs the operator with exactly these. A change here is a change of the
# operator's privileges: review it as such.
EXPECTED_RULES = {
    ("kiln.dev", "artifacts"): {"get", "list", "watch", "create", "patch", "reconcile"},
    ("kiln.dev", "workloads"): {"get", "list", "watch", "patch", "reconcile"},
    ("kiln.dev", "deployments"): {"get", "list", "watch", "patch", "reconcile"},
    ("kiln.dev", "artifacts/status"): {"patch"},
    ("kiln.dev", "workloads/status"): {"patch"},
    ("kiln.dev", "deployments/status"): {"patch"},
    ("kiln.dev", "workloads/finalizers"): {"update"},
    ("kiln.dev", "deployments/finalizers"): {"update"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "update"},
    ("policy", "poddisruptionbudgets"): {"get", "create", "patch", "delete"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("kiln.dev", "approvals"): {"get", "list", "watch"},
    ("kiln.dev", "approvalpolicies"): {"get"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    ("", "namespaces"): {"get"},  # a terminating namespace takes its governed Deployments along
}


def _rules(role: Obj) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"no resourceNames/nonResourceURLs: {rule}"
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((group, res), set()).update(rule["verbs"])
    return out


# Only what exists cluster-wide: the rest is namespaced (a Role per watched namespace) when it can be.
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"),
                  ("authorization.k8s.io", "subjectaccessreviews"), ("", "namespaces")}


def _least(role: Obj) -> None:
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {rule}"
        assert all("/" not in g for g in rule["apiGroups"]), f"apiGroups are group names, without versions: {rule}"
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert not {"secrets", "configmaps", "serviceaccounts/token"} & set(rule["resources"]), rule


def _bound(objs: list[Obj], kind: str, name: str, namespace: str | None = None) -> None:
    binding = one([o for o in objs if o["metadata"].get("namespace") == namespace], f"{kind}Binding", name)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kiln", "namespace": NS}]


def test_cluster_role_is_least_privilege(helm: Helm) -> None:
    objs = helm.objects()
    role = one(objs, "ClusterRole", f"{NS}-kiln")
    _least(role)
    assert _rules(role) == EXPECTED_RULES
    _bound(objs, "ClusterRole", f"{NS}-kiln")
    assert one(objs, "ServiceAccount", "kiln")["metadata"]["namespace"] == NS
    assert sorted(o["metadata"]["name"] for o in objs if o["kind"] == "Role") == ["kiln-leader-election",
                                                                                 "kiln-versions"]


def test_version_counters_role_is_configmaps_in_the_release_namespace(helm: Helm) -> None:
    objs = helm.objects()
    role = one(objs, "Role", "kiln-versions")
    assert role["metadata"]["namespace"] == NS
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]}]
    _bound(objs, "Role", "kiln-versions", NS)
    assert not [o for o in helm.objects("--set", "webhooks.enabled=false") if o["kind"] == "Role"
                and o["metadata"]["name"] == "kiln-versions"]


def test_secrets_only_when_asked_to_read_image_pull_secrets(helm: Helm) -> None:
    assert ("", "secrets") not in _rules(one(helm.objects(), "ClusterRole", f"{NS}-kiln"))
    role = one(helm.objects("--set", "registration.readImagePullSecrets=true"), "ClusterRole", f"{NS}-kiln")
    assert _rules(role)[("", "secrets")] == {"get"}


def test_registration_settings_reach_the_operator(helm: Helm) -> None:
    env = {e["name"]: e.get("value") for e in container(helm.objects(
        "--set-json", 'registration.skipDigestResolution=["kind.local","ko.local"]',
        "--set-json", 'registration.registryMirrors={"127.0.0.1:5001":"http://198.18.0.1:5001"}',
        "--set", "registration.allowTags=true"))["env"]}
    assert (env["KILN_DIGEST_SKIP_REGISTRIES"], env["KILN_DIGEST_ALLOW_TAGS"], env["KILN_DIGEST_TIMEOUT"]) == (
        "kind.local,ko.local", "true", "5")
    assert env["KILN_REGISTRY_MIRRORS"] == "127.0.0.1:5001=http://198.18.0.1:5001"
    assert "KILN_REGISTRY_MIRRORS" not in {e["name"] for e in container(helm.objects())["env"]}


def test_namespaced_install_has_roles_in_its_namespaces_and_no_cluster_rights_to_their_objects(helm: Helm) -> None:
    objs = helm.objects("--set", "watchNamespaces={team-a,team-b}")
    cluster_role = one(objs, "ClusterRole", f"{NS}-kiln")
    _least(cluster_role)
    # kopf lists and watches namespaces to serve some of them only.
    assert _rules(cluster_role) == {**{k: EXPECTED_RULES[k] for k in CLUSTER_SCOPED},
                                    ("", "namespaces"): {"get", "list", "watch"}}
    for resource in ("pods", "services", "events"):
        assert ("", resource) not in _rules(cluster_role)
    _bound(objs, "ClusterRole", f"{NS}-kiln")
    namespaced = {k: v for k, v in EXPECTED_RULES.items() if k not in CLUSTER_SCOPED}
    roles = {o["metadata"]["namespace"]: o for o in objs
             if o["kind"] == "Role" and o["metadata"]["name"] == f"{NS}-kiln"}
    assert sorted(roles) == ["team-a", "team-b"]
    for ns, role in roles.items():
        _least(role)
        assert _rules(role) == namespaced, ns
        _bound(objs, "Role", f"{NS}-kiln", ns)


def test_leader_election_role_is_one_lease(helm: Helm) -> None:
    objs = helm.objects()
    role = one(objs, "Role", "kiln-leader-election")
    assert role["metadata"]["namespace"] == NS
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kiln-leader"],
         "verbs": ["get", "update"]}]
    _bound(objs, "Role", "kiln-leader-election", NS)
    assert "--lease-name" in container(objs)["args"]
    off = helm.objects("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    assert not [o for o in off if o["kind"] == "PodDisruptionBudget" or "leader-election" in o["metadata"]["name"]]


# --- the operator's pod ------------------------------------------------------------------------------


def test_deployment_is_two_hardened_replicas(helm: Helm) -> None:
    objs = helm.objects()
    dep = one(objs, "Deployment", "kiln")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, \
        "a rollout never leaves the webhooks without a pod"
    pod = dep["spec"]["template"]["spec"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert pod["affinity"] == {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": selector}}}]}}
    pdb = one(objs, "PodDisruptionBudget", "kiln")
    assert pdb["metadata"]["namespace"] == NS
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container(objs)["env"] if "valueFrom" in e}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"}
    assert pod["serviceAccountName"] == "kiln"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    c = container(objs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"
    assert volumes[mounts["/certs"]]["secret"]["secretName"] == "kiln-webhook-tls"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}, probe
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"webhook": 9443, "healthz": 8080, "metrics": 8081,
                                                                   "webhook-metrics": 8082}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_one_replica_without_leader_election(helm: Helm, tmp_path: Path) -> None:
    objs = helm.objects("--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    dep = one(objs, "Deployment", "kiln")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}, "kopf runs standalone: never two at once"
    assert "--leader-election" not in container(objs)["args"]
    assert "affinity" not in dep["spec"]["template"]["spec"]
    r = helm.run("template", "kiln", str(CHART), "--set", "leaderElection.enabled=false", check=False)
    assert r.returncode != 0 and "replicaCount > 1 needs leaderElection.enabled" in r.stderr, r.stderr
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kiln.dev/node", "operator": "In", "values": ["real"]}]}]}}}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"affinity": affinity}))
    assert one(helm.objects("-f", str(values)), "Deployment")["spec"]["template"]["spec"]["affinity"] == affinity, \
        "the user's affinity replaces the default one"


# --- the image ---------------------------------------------------------------------------------------


def _final_stage(dockerfile: str) -> list[str]:
    """The instructions of the Dockerfile's last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def _entrypoint() -> list[str]:
    stage = _final_stage((REPO / "Dockerfile").read_text())
    (ep,) = [ln for ln in stage if ln.upper().startswith("ENTRYPOINT ")]
    value = json.loads(ep.split(None, 1)[1])
    assert isinstance(value, list), "ENTRYPOINT in exec form"
    return [str(v) for v in value]


def _cli_call(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What `kiln <argv>` passes to kiln.main.run (not run)."""
    from kiln import cli, main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(main, "run", lambda **kw: seen.update(kw) or 0)
    assert cli.main(argv) == 0
    return seen


LEADER = {"leader_election": True, "lease_name": "kiln-leader", "lease_duration": 15, "lease_namespace": None}
METRICS = {"metrics_addr": "$(POD_IP)", "metrics_port": 8081, "webhook_metrics_port": 8082}


@pytest.mark.parametrize(("values", "expected"), [
    ([], {"webhook_cert_dir": "/certs", "webhook_port": 9443, "webhooks": True, "namespaces": [],
          "liveness": "http://0.0.0.0:8080/healthz", "webhook_addr": "$(POD_IP)", "webhook_drain": 5, **LEADER,
          **METRICS}),
    (["--set", "watchNamespaces={team-a,team-b}", "--set", "webhooks.port=10250", "--set", "liveness.port=9090",
      "--set", "webhooks.bindAddress=0.0.0.0", "--set", "leaderElection.leaseDuration=30"],
     {"webhook_cert_dir": "/certs", "webhook_port": 10250, "webhooks": True, "namespaces": ["team-a", "team-b"],
      "liveness": "http://0.0.0.0:9090/healthz", "webhook_addr": "0.0.0.0", **LEADER, "lease_duration": 30,
      **METRICS}),
    (["--set", "webhooks.enabled=false"],
     {"webhook_cert_dir": None, "webhooks": False, "namespaces": [], "liveness": "http://0.0.0.0:8080/healthz",
      "webhook_addr": None, **LEADER, **METRICS, "webhook_metrics_port": 0}),
    (["--set", "leaderElection.enabled=false", "--set", "replicaCount=1"],
     {"webhook_cert_dir": "/certs", "webhook_port": 9443, "webhooks": True, "leader_election": False,
      "liveness": "http://0.0.0.0:8080/healthz", **METRICS}),
], ids=["defaults", "namespaces-and-ports", "no-webhooks", "standalone"])
def test_container_args_are_the_entrypoints_in_cluster_contract(
        helm: Helm, monkeypatch: pytest.MonkeyPatch, values: list[str], expected: dict[str, Any]) -> None:
    objs = helm.objects(*values)
    c = container(objs)
    entrypoint = _entrypoint()
    assert entrypoint == ["kiln", "run"]
    assert c.get("command") in (None, entrypoint), "the chart sets args only: the image's ENTRYPOINT runs"
    scripts = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kiln"] == "kiln.cli:main"
    call = _cli_call([*entrypoint[1:], *c["args"]], monkeypatch)
    assert {k: call[k] for k in expected} == expected
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert expected["liveness"].endswith(f":{ports['healthz']}/healthz")
    if expected["webhooks"]:
        assert ports["webhook"] == expected["webhook_port"]
    assert ports["metrics"] == expected["metrics_port"]
    assert ports.get("webhook-metrics", 0) == expected["webhook_metrics_port"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/scorer/Dockerfile"])
def test_dockerfiles_default_to_a_pinned_public_base_that_a_build_argument_replaces(dockerfile: str) -> None:
    """Users build with the public base; `make images` passes one made from Debian's packages."""
    text = (REPO / dockerfile).read_text()
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", default), f"pinned slim base: {default}"
    assert set(re.findall(r"^FROM\s+(\S+)", text, re.M)) == {"${BASE_IMAGE}"}
    assert re.search(r"^USER \d+:\d+$", text, re.M), "a numeric non-root user (runAsNonRoot can check it)"


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM\s+(\S+)", text, re.M)) >= 2, "multi-stage"
    stage = _final_stage(text)
    assert "USER 65532:65532" in stage, "runs as the uid the chart sets"
    assert not [ln for ln in stage if re.search(r"\b(apt-get|gcc|build-essential)\b", ln)], "no build tools at run time"
    assert any("pip uninstall" in ln for ln in stage), "no installer at run time"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/scorer/Dockerfile"])
def test_hadolint_is_clean(dockerfile: str) -> None:
    r = subprocess.run([str(BIN / "hadolint"), "--config", str(REPO / ".hadolint.yaml"), "--no-color",
                        str(REPO / dockerfile)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_the_package_users_install_carries_no_development_tools(tmp_path: Path) -> None:
    """The wheel (what the image's `pip install .` installs) has the operator only: the local cluster,
    its real node and images (kiln_dev) and their dependencies stay with the dev extra."""
    import zipfile

    subprocess.run([str(BIN / "python"), "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("kiln-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "kiln/controllers/workloads.py" in names and "kiln/admission/server.py" in names
    assert not [n for n in names if n.startswith("kiln_dev/")], names
    runtime_deps = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [d for d in runtime_deps if "trustme" in d or "cryptography" in d], runtime_deps


def test_the_personas_roles_ship(helm: Helm) -> None:
    """docs/governance.md: a ClusterRole per persona, aggregated into view, edit and admin where they belong;
    registering and approving are Kiln's own verbs."""
    roles = {o["metadata"]["name"]: o for o in helm.objects() if o["kind"] == "ClusterRole"
             and "kiln.dev/persona" in o["metadata"]["labels"]}
    assert sorted(roles) == ["kiln-approver", "kiln-deployer", "kiln-developer", "kiln-registrar", "kiln-viewer"]

    def verbs(role: str, resource: str) -> set[str]:
        return {v for r in roles[role]["rules"] if resource in r["resources"] for v in r["verbs"]}

    assert "register" in verbs("kiln-registrar", "artifacts") and "register" not in verbs("kiln-developer", "artifacts")
    assert "approve" in verbs("kiln-approver", "deployments") and "approve" not in verbs("kiln-deployer", "deployments")
    assert verbs("kiln-viewer", "approvals") == {"get", "list", "watch"}
    assert roles["kiln-viewer"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert roles["kiln-developer"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert roles["kiln-approver"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert not [o for o in helm.objects("--set", "rbac.personas.create=false")
                if "kiln.dev/persona" in o["metadata"].get("labels", {})]


def test_log_format_reaches_the_operator(helm: Helm) -> None:
    args = container(helm.objects("--set", "logFormat=json"))["args"]
    assert args[args.index("--log-format") + 1] == "json"
    args = container(helm.objects())["args"]
    assert args[args.index("--log-format") + 1] == "text"
    assert helm.run("template", "kiln", str(CHART), "--set", "logFormat=yaml", check=False).returncode != 0
