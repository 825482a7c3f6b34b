"""`kubectl kiln` (operator/kiln/plugin.py) driven as a subprocess, the way a user runs it, against the real
API server with the real operator: each verb's effect on the API objects, its --help naming its kubectl
equivalent, kubectl's conventions (-n, --context, --kubeconfig, --as, -o, exit codes), completion; and the
seed's tutorial followed with `kubectl kiln` verbs alone (create workload, update artifact, stop, start,
register, promote, approve, history, get). `call` needs the real node's model server:
tests/e2e/test_plugin_call.py, which also follows that tutorial calling the model at each step."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_deployments import deployment
from tests.integration.test_workloads import container, create, get, pod_names, wait_running, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-kiln"
ADMIN = "kiln-admin"  # the local cluster's kubeconfig user
DEPLOYER, APPROVER = "dan", "alice"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

VERBS = {  # verb: what its --help must name (its kubectl equivalent)
    "create": "kubectl create -f - <<EOF\n  apiVersion: kiln.dev/v1alpha1\n  kind: Workload",
    "update": """kubectl patch artifact.kiln.dev NAME --type merge -p '{"spec":{"description":"TEXT",""",
    "stop": """kubectl patch workload.kiln.dev NAME --type merge -p '{"spec":{"state":"Stopped"}}'""",
    "start": """kubectl patch workload.kiln.dev NAME --type merge -p '{"spec":{"state":"Running"}}'""",
    "restart": "kubectl annotate workload.kiln.dev NAME --overwrite kiln.dev/restartedAt=",
    "register": """kubectl patch artifact.kiln.dev NAME --type merge -p '{"spec":{"lifecycle":"Registered"}}'""",
    "promote": "spec: {workloadRef: {name: NAME}",
    "approve": "decision: Approve",
    "reject": "decision: Reject",
    "rollback": """kubectl patch deployment.kiln.dev NAME --type merge -p '{"spec":{"artifactRef":{"name":null,""",
    "history": "kubectl get deployment.kiln.dev NAME -o jsonpath='{range .status.history[*]}",
    "get": "kubectl get artifact.kiln.dev NAME",
    "call": "kubectl port-forward --address=127.0.0.1 service/NAME-dev",
    "completion": "source <(kubectl-kiln completion bash)",
}


def env(kube: Kube | None = None) -> dict[str, str]:
    e = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    e.pop("NO_COLOR", None)
    if kube is not None:
        e["KUBECONFIG"] = str(kube.kubeconfig)
    return e


def plugin(kube: Kube | None, *args: str, check: bool = True, input: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(PLUGIN), *args], env=env(kube), input=input, text=True, capture_output=True,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, f"kubectl kiln {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def wait_for(kube: Kube, ns: str, plural: str, name: str, check: Any, what: str, timeout: float = 60) -> Any:
    return kube.wait(lambda: check(get(kube, ns, plural, name)), what=what, timeout=timeout)


def approved_reason(obj: dict[str, Any]) -> str | None:
    c = Kube.condition(obj, "Approved") or {}
    return c.get("reason") if c.get("observedGeneration") == obj["metadata"]["generation"] else None


def bind(kube: Kube, ns: str, user: str, persona: str) -> None:
    kube.kubectl("-n", ns, "create", "rolebinding", f"{user}-{persona}", f"--clusterrole=kiln-{persona}",
                 f"--user={user}")


def registered_workload(kube: Kube, ns: str, name: str) -> None:
    """A Workload with an inline artifact, running, its Artifact registered (by the admin, with kubectl)."""
    create(kube, ns, workload(name, inline=[container()]))
    wait_running(kube, ns, name)
    kube.kubectl("-n", ns, "patch", "artifact.kiln.dev", name, "--type=merge", "-p",
                 '{"spec":{"lifecycle":"Registered"}}')
    wait_for(kube, ns, "artifacts", name, lambda a: (a.get("status") or {}).get("lifecycle") == "Registered",
             f"artifact {name} registered")


# --- no API calls: help, usage errors, completion ----------------------------------------------------


def test_every_verb_has_help_naming_its_kubectl_equivalent() -> None:
    top = plugin(None, "--help").stdout
    for verb, equivalent in VERBS.items():
        assert re.search(rf"^\s+{verb}\s", top, re.M), f"{verb} missing from --help:\n{top}"
        out = plugin(None, verb, "--help").stdout
        assert "same as:" in out and equivalent in out, f"{verb} --help:\n{out}"
        for option in ("--namespace", "--context", "--kubeconfig", "--as"):
            assert option in out, f"{verb} --help lacks {option}"
    # kubectl finds the plugin on PATH: `kubectl kiln` is the same program.
    r = subprocess.run(["kubectl", "kiln", "stop", "--help"], env=env(), text=True, capture_output=True, timeout=30)
    assert r.returncode == 0 and VERBS["stop"] in r.stdout, r.stderr
    for verb in ("history", "get"):
        assert "-o {json,yaml}" in plugin(None, verb, "--help").stdout
    # create and update: the -f forms, and a merge patch of spec.containers replaces the list whole.
    assert "kubectl create -f FILE" in plugin(None, "create", "--help").stdout
    out = plugin(None, "update", "--help").stdout
    assert "kubectl replace -f FILE" in out and "a merge patch replaces a list whole" in out, out
    assert """kubectl patch artifact.kiln.dev NAME --type merge -p '{"metadata":{"resourceVersion":"RV"},""" \
           """"spec":{"containers":[...]}}'""" in out, out


@pytest.mark.parametrize("args", [
    (),  # no verb
    ("frobnicate",),
    ("stop", "deployment", "x"),  # stop works on workloads only
    ("stop", "workload"),  # no name
    ("stop", "workload/x", "y"),
    ("promote", "workload", "x"),  # --name missing
    ("promote", "workload", "x", "--name", "p", "--importance", "Huge"),
    ("history", "deployment", "x", "-o", "wide"),
    ("call", "artifact", "x"),
    ("--as-group", "a", "--as-group", "b", "stop", "workload", "x"),
    ("create",),  # nothing to create
    ("create", "workload", "x"),  # --image missing
    ("create", "artifact", "x", "--image", "i"),  # create makes workloads (or -f)
    ("create", "-f", "f.yaml", "workload", "x"),
    ("create", "workload", "x", "--image", "i", "--update-policy", "Sometimes"),
    ("create", "workload", "x", "--image", "i", "--port", "0"),
    ("create", "workload", "x", "--image", "i", "--env", "NOVALUE"),
    ("create", "workload", "x", "--image", "i", "--readiness-path", "/ready"),  # no port to probe
    ("update", "artifact", "x"),  # nothing to change
    ("update", "workload", "x", "--image", "i"),
    ("update", "artifact", "x", "--requests", "cpu"),
    ("update", "-f", "f.yaml", "--image", "i"),
])
def test_usage_errors_exit_2_before_any_api_call(args: tuple[str, ...], tmp_path: Path) -> None:
    e = {**env(), "KUBECONFIG": str(tmp_path / "none")}  # no API server would answer anyway
    r = subprocess.run([str(PLUGIN), *args], env=e, text=True, capture_output=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "usage: kubectl kiln" in r.stderr


def test_completion_scripts_and_kubectl_plugin_completion(kube: Kube, operator: Operator, namespace: str) -> None:
    bash = plugin(None, "completion", "bash").stdout
    assert "complete -o default -F _kubectl_kiln kubectl-kiln" in bash
    zsh = plugin(None, "completion", "zsh").stdout
    assert zsh.startswith("#compdef kubectl-kiln") and "compdef _kubectl_kiln kubectl-kiln" in zsh

    def bash_complete(*words: str) -> list[str]:
        quoted = " ".join(map(shlex.quote, words))
        script = (f"source <(kubectl-kiln completion bash)\nCOMP_WORDS=(kubectl-kiln {quoted})\n"
                  f"COMP_CWORD={len(words)}\n_kubectl_kiln\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"")
        r = subprocess.run(["bash", "-c", script], env=env(kube), text=True, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert bash_complete("st") == ["stop", "start"]
    assert bash_complete("create", "") == ["workload"] and bash_complete("update", "") == ["artifact"]
    assert bash_complete("create", "workload", "x", "--update-policy", "") == ["Automatic", "Manual"]
    assert "--readiness-path" in bash_complete("update", "artifact", "x", "--rea")
    assert bash_complete("approve", "") == ["deployment"]
    assert bash_complete("promote", "workload", "x", "--importance", "") == ["Critical", "High", "Moderate", "Low"]
    assert "--watch" in bash_complete("get", "x", "--w")

    # Names come from the API server, in the namespace given.
    create(kube, namespace, workload("alpha", inline=[container()]))
    create(kube, namespace, workload("beta", inline=[container()]))
    assert bash_complete("-n", namespace, "stop", "workload", "") == ["alpha", "beta"]
    assert bash_complete("get", "--namespace", namespace, "a") == ["alpha"]
    kube.wait(lambda: bash_complete("-n", namespace, "update", "artifact", "") == ["alpha", "beta"],
              what="the artifacts made from the workloads completed")
    # kubectl's plugin completion (kubectl 1.26+) asks kubectl_complete-kiln, Cobra's protocol.
    r = subprocess.run([str(BIN / "kubectl_complete-kiln"), "-n", namespace, "restart", "workload", "b"],
                       env=env(kube), text=True, capture_output=True, timeout=30)
    assert r.stdout.split("\n")[:2] == ["beta", ":4"], r.stdout
    r = subprocess.run([str(BIN / "kubectl_complete-kiln"), "create", "-f", ""], env=env(kube), text=True,
                       capture_output=True, timeout=30)
    assert r.stdout == ":0\n", r.stdout  # -f FILE: the shell completes a file name
    r = subprocess.run(["kubectl", "__complete", "kiln", "-n", namespace, "start", "kwl", ""], env=env(kube),
                       text=True, capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.split("\n")[:2] == ["alpha", "beta"], (r.stdout, r.stderr)


# --- the verbs ----------------------------------------------------------------------------------------


def test_stop_start_restart(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("my-app", inline=[container()]))
    wait_running(kube, namespace, "my-app")

    r = plugin(kube, "-n", namespace, "stop", "workload", "my-app")
    assert r.stdout == "workload.kiln.dev/my-app stopped\n"
    assert get(kube, namespace, "workloads", "my-app")["spec"]["state"] == "Stopped"
    wait_for(kube, namespace, "workloads", "my-app", lambda w: (w.get("status") or {}).get("state") == "Stopped"
             and not pod_names(kube, namespace, "my-app"), "workload stopped, no pods")

    # kubectl's forms: KIND/NAME, short and full names, the namespace after the verb, -o.
    r = plugin(kube, "start", "kwl/my-app", "--namespace", namespace, "-o", "json")
    assert json.loads(r.stdout)["spec"]["state"] == "Running"
    wait_running(kube, namespace, "my-app")
    before = pod_names(kube, namespace, "my-app")

    t0 = datetime.now(UTC).replace(microsecond=0)
    r = plugin(kube, "-n", namespace, "restart", "workloads.kiln.dev", "my-app", "-o", "name")
    assert r.stdout == "workload.kiln.dev/my-app\n"
    stamp = get(kube, namespace, "workloads", "my-app")["metadata"]["annotations"]["kiln.dev/restartedAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp  # RFC 3339, UTC
    assert 0 <= (datetime.fromisoformat(stamp) - t0).total_seconds() < 30
    kube.wait(lambda: (n := pod_names(kube, namespace, "my-app")) and n.isdisjoint(before), what="pods replaced")
    obj = wait_running(kube, namespace, "my-app")
    assert obj["status"]["restartedAt"] == stamp


def test_api_errors_exit_1_with_the_api_servers_message(kube: Kube, operator: Operator, namespace: str) -> None:
    r = plugin(kube, "-n", namespace, "stop", "workload", "missing", check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == 'Error from server (NotFound): workloads.kiln.dev "missing" not found'
    # Admission's refusal, verbatim: a Deployment of a Draft artifact.
    create(kube, namespace, workload("draft", inline=[container()]))
    r = plugin(kube, "-n", namespace, "promote", "workload", "draft", "--name", "prod", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error from server"), r.stderr
    assert "draft" in r.stderr and "Register" in r.stderr.replace("register", "Register"), r.stderr
    r = plugin(kube, "-n", namespace, "get", "nothing-here", check=False)
    assert r.returncode == 1 and 'artifacts.kiln.dev "nothing-here" not found' in r.stderr
    # An unknown context, as kubectl: an error, exit 1.
    r = plugin(kube, "--context", "no-such-context", "-n", namespace, "stop", "workload", "draft", check=False)
    assert r.returncode == 1 and "no-such-context" in r.stderr, r.stderr


def test_kubeconfig_context_and_its_namespace(kube: Kube, operator: Operator, namespace: str, tmp_path: Path) -> None:
    """--kubeconfig and --context as kubectl takes them; without -n, the context's namespace."""
    create(kube, namespace, workload("ctx", inline=[container()]))
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    current = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])
    cfg["contexts"].append({"name": "plugin-test", "context": {**current["context"], "namespace": namespace}})
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    e = {**env(), "KUBECONFIG": str(tmp_path / "elsewhere")}
    r = subprocess.run([str(PLUGIN), "--kubeconfig", str(path), "--context", "plugin-test", "stop", "workload", "ctx"],
                       env=e, text=True, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert get(kube, namespace, "workloads", "ctx")["spec"]["state"] == "Stopped"
    # The current context has no namespace: default, where there is no such workload.
    r = subprocess.run([str(PLUGIN), "--kubeconfig", str(path), "start", "workload", "ctx"],
                       env=e, text=True, capture_output=True, timeout=60)
    assert r.returncode == 1 and 'workloads.kiln.dev "ctx" not found' in r.stderr


def test_register_promote_approve_and_history(kube: Kube, operator: Operator, namespace: str) -> None:
    bind(kube, namespace, DEPLOYER, "deployer")
    bind(kube, namespace, APPROVER, "approver")
    create(kube, namespace, workload("scorer", inline=[container()]))
    wait_running(kube, namespace, "scorer")

    r = plugin(kube, "-n", namespace, "register", "artifact", "scorer")
    assert r.stdout == "artifact.kiln.dev/scorer registered\n"
    art = wait_for(kube, namespace, "artifacts", "scorer",
                   lambda a: a if (a.get("status") or {}).get("lifecycle") == "Registered" else None, "registered")
    assert art["spec"]["lifecycle"] == "Registered" and art["status"]["registeredBy"] == ADMIN

    # dan promotes (impersonated with --as, as kubectl --as): the change is his, it waits for an approval.
    r = plugin(kube, "--as", DEPLOYER, "-n", namespace, "promote", "workload", "scorer", "--name", "scorer-prod",
               "--importance", "High", "--replicas", "2", "-o", "json")
    dep = json.loads(r.stdout)
    assert dep["spec"]["workloadRef"] == {"name": "scorer"} and dep["spec"]["artifactRef"]["name"] == "scorer"
    assert (dep["spec"]["importance"], dep["spec"]["replicas"]) == ("High", 2)
    wait_for(kube, namespace, "deployments", "scorer-prod", lambda d: approved_reason(d) == "AwaitingApproval",
             "awaiting approval")

    # Nobody approves their own change: admission's refusal, printed, exit 1.
    r = plugin(kube, "--as", DEPLOYER, "-n", namespace, "approve", "deployment", "scorer-prod", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error from server") and DEPLOYER in r.stderr, r.stderr
    assert not kube.custom.list_namespaced_custom_object("kiln.dev", "v1alpha1", namespace, "approvals")["items"]

    r = plugin(kube, "--as", APPROVER, "-n", namespace, "approve", "kdep/scorer-prod", "--comment", "looks good")
    assert re.fullmatch(r"approval\.kiln\.dev/scorer-prod-1-\w+ created: Approve of deployment\.kiln\.dev/scorer-prod "
                        r"\(generation 1\)\n", r.stdout), r.stdout
    (appr,) = kube.custom.list_namespaced_custom_object("kiln.dev", "v1alpha1", namespace, "approvals")["items"]
    assert appr["spec"] == {"deploymentRef": {"name": "scorer-prod"}, "generation": 1, "decision": "Approve",
                            "deletion": False, "comment": "looks good", "approver": APPROVER}
    wait_for(kube, namespace, "deployments", "scorer-prod", lambda d: approved_reason(d) == "Approved", "approved")
    dep = wait_for(kube, namespace, "deployments", "scorer-prod",
                   lambda d: d if len((d.get("status") or {}).get("history") or []) >= 3 else None, "history")

    r = plugin(kube, "-n", namespace, "history", "deployment", "scorer-prod")
    rows = columns(r.stdout)
    assert list(rows[0]) == ["TIME", "GENERATION", "ACTION", "ACTOR", "ARTIFACT", "VERSION", "DIGEST", "REPLICAS",
                             "IMPORTANCE", "MESSAGE"]
    assert [(h["ACTION"], h["ACTOR"]) for h in rows[:3]] == [("ApprovalRequested", DEPLOYER), ("Approved", APPROVER),
                                                             ("Created", DEPLOYER)], r.stdout
    assert rows[1]["MESSAGE"] == "looks good" and rows[2]["DIGEST"].startswith("sha256:")
    assert (rows[2]["ARTIFACT"], rows[2]["REPLICAS"], rows[2]["IMPORTANCE"]) == ("scorer", "2", "High")
    history = dep["status"]["history"]
    as_json = json.loads(plugin(kube, "-n", namespace, "history", "deployment", "scorer-prod", "-o", "json").stdout)
    as_yaml = yaml.safe_load(plugin(kube, "-n", namespace, "history", "deployment", "scorer-prod", "-o", "yaml").stdout)
    assert as_json == as_yaml and as_json[:3] == history[:3]


def test_rollback_to_the_previous_artifact_or_to_a_version(kube: Kube, operator: Operator, namespace: str) -> None:
    ns = namespace
    uids = {}
    for i in (1, 2, 3):
        create(kube, ns, {"apiVersion": "kiln.dev/v1alpha1", "kind": "Artifact", "metadata": {"name": f"scorer-v{i}"},
                          "spec": {"collection": "scorer", "containers": [container(f"registry.example/scorer:{i}")]}})
        plugin(kube, "-n", ns, "register", "artifact", f"scorer-v{i}")
        uids[i] = wait_for(kube, ns, "artifacts", f"scorer-v{i}", lambda a: (a.get("status") or {}).get("version")
                           and a["metadata"]["uid"], f"scorer-v{i} numbered")

    def runs(version: int, action: str) -> dict[str, Any]:
        dep = wait_for(kube, ns, "deployments", "prod", lambda d: d if (d.get("status") or {}).get(
            "artifact", {}).get("version") == version and (Kube.condition(d, "Ready") or {}).get("status") == "True"
            else None, f"production on version {version}")
        assert dep["status"]["history"][-1]["action"] == action, dep["status"]["history"][-1]
        return dict(dep)

    r = plugin(kube, "-n", ns, "rollback", "deployment", "prod", check=False)
    assert r.returncode == 1 and "not found" in r.stderr, r.stderr
    create(kube, ns, deployment("prod", artifact_ref="scorer-v1"))
    runs(1, "Created")
    r = plugin(kube, "-n", ns, "rollback", "deployment", "prod", check=False)
    assert (r.returncode, r.stderr) == (1, "error: deployment.kiln.dev/prod has run no other Artifact: nothing to "
                                           "roll back to\n")
    kube.kubectl("-n", ns, "patch", "deployment.kiln.dev", "prod", "--type=merge", "-p",
                 '{"spec":{"artifactRef":{"name":"scorer-v2"}}}')
    runs(2, "ArtifactSwitched")

    # Named by name: back to the previous one, by name and uid.
    r = plugin(kube, "-n", ns, "rollback", "kdep/prod")
    assert r.stdout == ("deployment.kiln.dev/prod rolled back to artifact scorer-v1 "
                        "(kubectl kiln history deployment prod)\n"), r.stdout
    dep = runs(1, "RolledBack")
    assert dep["spec"]["artifactRef"] == {"name": "scorer-v1", "uid": uids[1]}
    assert (dep["status"]["history"][-1]["fromVersion"], dep["status"]["history"][-1]["version"]) == (2, 1)

    # To a version of its collection: from now on it names the Artifact by version.
    plugin(kube, "-n", ns, "rollback", "deployment", "prod", "--to-version", "3")
    dep = runs(3, "ArtifactSwitched")  # never ran here: not a rollback
    assert dep["spec"]["artifactRef"] == {"collection": "scorer", "version": 3}
    plugin(kube, "-n", ns, "rollback", "deployment", "prod")
    dep = runs(1, "RolledBack")
    assert dep["spec"]["artifactRef"] == {"collection": "scorer", "version": 1, "uid": uids[1]}
    rows = columns(plugin(kube, "-n", ns, "history", "deployment", "prod").stdout)
    assert [(h["ACTION"], h["VERSION"]) for h in rows] == [("Created", "1"), ("ArtifactSwitched", "2"),
                                                          ("RolledBack", "1"), ("ArtifactSwitched", "3"),
                                                          ("RolledBack", "1")]

    # An Artifact without a collection has no versions to go to.
    create(kube, ns, {"apiVersion": "kiln.dev/v1alpha1", "kind": "Artifact", "metadata": {"name": "loose"},
                      "spec": {"containers": [container()]}})
    plugin(kube, "-n", ns, "register", "artifact", "loose")
    create(kube, ns, deployment("other", artifact_ref="loose"))
    wait_for(kube, ns, "deployments", "other", lambda d: (d.get("status") or {}).get("artifact"), "other running")
    r = plugin(kube, "-n", ns, "rollback", "deployment", "other", "--to-version", "1", check=False)
    assert r.returncode == 1 and "which has no collection" in r.stderr, r.stderr


def test_reject_and_approve_a_deletion(kube: Kube, operator: Operator, namespace: str) -> None:
    """The Deployment requested by dan (kubectl --as), decided by the admin, who did not request it."""
    bind(kube, namespace, DEPLOYER, "deployer")
    registered_workload(kube, namespace, "model")
    kube.kubectl("--as", DEPLOYER, "-n", namespace, "create", "-f", "-",
                 input=json.dumps(deployment("prod", workload_ref="model", importance="High")))
    wait_for(kube, namespace, "deployments", "prod", lambda d: approved_reason(d) == "AwaitingApproval", "awaiting")

    r = plugin(kube, "-n", namespace, "reject", "deployment", "prod", "--comment", "not tonight", "-o", "yaml")
    appr = yaml.safe_load(r.stdout)
    assert appr["kind"] == "Approval" and appr["metadata"]["name"].startswith("prod-1-")
    assert appr["spec"]["decision"] == "Reject" and appr["spec"]["approver"] == ADMIN
    d = wait_for(kube, namespace, "deployments", "prod", lambda d: d if approved_reason(d) == "Rejected" else None,
                 "rejected")
    assert "not tonight" in (Kube.condition(d, "Approved") or {}).get("message", "")
    assert not kube.exists(kube.apps.read_namespaced_deployment, "prod", namespace)

    # Deleting it waits for an approval of its deletion by someone other than who deletes it.
    r = kube.kubectl("--as", DEPLOYER, "-n", namespace, "delete", "deployment.kiln.dev", "prod", "--wait=false",
                     check=False)
    assert r.returncode != 0 and "approval" in r.stderr, r.stderr
    r = plugin(kube, "-n", namespace, "approve", "deployment", "prod", "--deletion")
    assert "Approve of deployment.kiln.dev/prod (deletion)" in r.stdout
    approvals = kube.custom.list_namespaced_custom_object("kiln.dev", "v1alpha1", namespace, "approvals")["items"]
    assert [a["spec"]["deletion"] for a in approvals if a["spec"]["decision"] == "Approve"] == [True]
    kube.kubectl("--as", DEPLOYER, "-n", namespace, "delete", "deployment.kiln.dev", "prod", "--wait=false")


def columns(table: str) -> list[dict[str, str]]:
    """A kubectl-style table's rows, cut at its header's column starts."""
    header, *lines = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [{n: line[a:b].rstrip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
            for line in lines]


def tree_objects(kube: Kube, ns: str) -> None:
    """Artifact app (registered), run by Workload app (inline) and app-2 (by reference), built into the
    Deployment app-prod (Low: no approval needed); Workload other runs another artifact."""
    registered_workload(kube, ns, "app")
    create(kube, ns, workload("app-2", ref="app", replicas=2))
    create(kube, ns, workload("other", inline=[container()]))
    create(kube, ns, deployment("app-prod", artifact_ref="app", importance="Low"))
    wait_running(kube, ns, "app-2", replicas=2)
    wait_for(kube, ns, "deployments", "app-prod",
             lambda d: (Kube.condition(d, "Ready") or {}).get("status") == "True", "app-prod ready")


def test_get_tree(kube: Kube, operator: Operator, namespace: str) -> None:
    tree_objects(kube, namespace)
    r = plugin(kube, "-n", namespace, "get", "app")
    assert "\033[" not in r.stdout  # no colour unless on a terminal
    rows = columns(r.stdout)
    assert list(rows[0]) == ["NAME", "READY", "REASON", "STATUS", "AGE", "MESSAGE"]
    names = [row["NAME"] for row in rows]
    wl_pods = sorted(pod_names(kube, namespace, "app"))
    wl2_pods = sorted(pod_names(kube, namespace, "app-2"))
    dep_pods = sorted(p.metadata.name for p in kube.core.list_namespaced_pod(
        namespace, label_selector="kiln.dev/deployment=app-prod").items)
    assert len(wl2_pods) == 2 and dep_pods

    def branch(prefix: str, pods: list[str]) -> list[str]:
        return [f"{prefix}{'└─' if p == pods[-1] else '├─'}Pod/{p}" for p in pods]

    assert names == ["Artifact/app", "├─Workload/app", *branch("│ ", wl_pods), "├─Workload/app-2",
                     *branch("│ ", wl2_pods), "└─Deployment/app-prod", *branch("  ", dep_pods)], r.stdout
    assert all(row["READY"] == "True" for row in rows), r.stdout  # Ready, each
    assert rows[0]["STATUS"].startswith("Registered sha256:") and rows[0]["STATUS"].endswith(f"by {ADMIN}")
    assert rows[3]["STATUS"] == "Running 2/2" and rows[-len(dep_pods) - 1]["STATUS"].startswith("Low 1/1")
    assert all(re.fullmatch(r"\d+s|\d+m(\d+s)?", row["AGE"]) for row in rows), r.stdout
    assert "other" not in r.stdout

    data = json.loads(plugin(kube, "-n", namespace, "get", "app", "-o", "json").stdout)
    assert data["artifact"]["metadata"]["name"] == "app"
    assert [w["workload"]["metadata"]["name"] for w in data["workloads"]] == ["app", "app-2"]
    assert [p["metadata"]["name"] for p in data["workloads"][1]["pods"]] == wl2_pods
    assert [d["deployment"]["metadata"]["name"] for d in data["deployments"]] == ["app-prod"]
    assert yaml.safe_load(plugin(kube, "-n", namespace, "get", "app", "-o", "yaml").stdout)["workloads"][0][
        "workload"]["metadata"]["name"] == "app"

    # On a terminal, READY is coloured.
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([str(PLUGIN), "-n", namespace, "get", "app"], env={**env(kube), "TERM": "xterm"},
                            stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0
    assert b"\033[32mTrue" in out, out


def test_get_watch_rerenders_on_changes(kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, workload("live", inline=[container()]))
    wait_running(kube, namespace, "live")
    proc = subprocess.Popen([str(PLUGIN), "-n", namespace, "get", "live", "--watch"], env=env(kube),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]

    def renders() -> list[str]:
        return "".join(lines).split("\n\n")

    try:
        kube.wait(lambda: any("Workload/live" in r and "Running 1/1" in r for r in renders()),
                  what="the first render", timeout=30)
        plugin(kube, "-n", namespace, "stop", "workload", "live")
        kube.wait(lambda: any("Workload/live" in r and "Stopped" in r and "Pod/" not in r for r in renders()),
                  what="a render of the stopped workload", timeout=30)
        count = len(renders())
        time.sleep(4.5)  # two polls without a change: nothing rendered
        assert len(renders()) == count
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it
        assert proc.wait(timeout=15) == 0


def test_kubectl_dispatches_to_the_plugin(kube: Kube, operator: Operator, namespace: str) -> None:
    """`kubectl kiln` (the plugin found on PATH) acts like kubectl-kiln."""
    create(kube, namespace, workload("via-kubectl", inline=[container()]))
    r = subprocess.run(["kubectl", "kiln", "-n", namespace, "stop", "workload", "via-kubectl"], env=env(kube),
                       text=True, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "workload.kiln.dev/via-kubectl stopped\n", r.stderr
    assert get(kube, namespace, "workloads", "via-kubectl")["spec"]["state"] == "Stopped"


# --- create and update: the tutorial's steps 1, 2a and 2b ----------------------------------------------


def spec_digest(kube: Kube, ns: str, name: str, generation: int) -> str:
    """The Artifact's digest once the operator has seen its generation ``generation``."""
    art = wait_for(kube, ns, "artifacts", name, lambda a: a if (a.get("status") or {}).get("observedGeneration")
                   == generation else None, f"artifact {name} generation {generation} observed")
    return str(art["status"]["specDigest"])


def test_create_workload_runs_pods(kube: Kube, operator: Operator, namespace: str, tmp_path: Path) -> None:
    r = plugin(kube, "-n", namespace, "create", "workload", "web", "--image", "registry.example/web:1",
               "--port", "8080", "--port", "9090", "--env", "LOG_LEVEL=info", "--env", "GREETING=a=b c",
               "--command", "python -m web", "--args", "--verbose --workers 2", "--replicas", "2",
               "--update-policy", "Manual", "--display-name", "Web", "--description", "v1",
               "--readiness-path", "/ready", "--requests", "cpu=100m,memory=128Mi", "--limits", "memory=256Mi")
    assert r.stdout == "workload.kiln.dev/web created (its Draft artifact: artifact.kiln.dev/web)\n", r.stdout
    wl = get(kube, namespace, "workloads", "web")
    app = {"name": "app", "image": "registry.example/web:1", "command": ["python", "-m", "web"],
           "args": ["--verbose", "--workers", "2"],
           "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "GREETING", "value": "a=b c"}],
           "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                     {"name": "p9090", "containerPort": 9090, "protocol": "TCP"}],
           "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
           "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}}
    assert wl["spec"]["artifact"] == {"displayName": "Web", "description": "v1", "containers": [app]}, wl["spec"]
    assert (wl["spec"]["replicas"], wl["spec"]["updatePolicy"]) == (2, "Manual")
    wait_running(kube, namespace, "web", replicas=2)
    art = get(kube, namespace, "artifacts", "web")
    assert art["spec"]["lifecycle"] == "Draft" and art["spec"]["containers"] == [app]
    assert (art["spec"]["displayName"], art["spec"]["description"]) == ("Web", "v1")

    # -o json prints the object created; the same name again: the API server's AlreadyExists, exit 1.
    r = plugin(kube, "-n", namespace, "create", "workload/api", "--image", "registry.example/api:1", "-o", "json")
    containers = json.loads(r.stdout)["spec"]["artifact"]["containers"]
    assert containers == [{"name": "app", "image": "registry.example/api:1"}]
    wait_running(kube, namespace, "api")
    r = plugin(kube, "-n", namespace, "create", "workload", "api", "--image", "x", check=False)
    assert r.returncode == 1 and r.stderr.strip() == \
        'Error from server (AlreadyExists): workloads.kiln.dev "api" already exists', r.stderr

    # -f FILE, as kubectl create -f: the tutorial's manifest, and stdin (-).
    r = plugin(kube, "-n", namespace, "create", "-f", str(EXAMPLES / "01-workload-with-inline-artifact.yaml"))
    assert r.stdout == "workload.kiln.dev/my-app created\n"
    wait_running(kube, namespace, "my-app")
    manifest = yaml.safe_dump(workload("piped", inline=[container()]))
    r = plugin(kube, "-n", namespace, "create", "-f", "-", "-o", "name", input=manifest)
    assert r.stdout == "workload.kiln.dev/piped\n"
    # Not a Kiln object, or another namespace than -n: refused before any write.
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    r = plugin(kube, "-n", namespace, "create", "-f", str(other), check=False)
    assert r.returncode == 1 and "not a Kiln object" in r.stderr, r.stderr
    r = plugin(kube, "-n", namespace, "create", "-f", "-", check=False, input=yaml.safe_dump(
        {**workload("elsewhere", inline=[container()]), "metadata": {"name": "elsewhere", "namespace": "kube-system"}}))
    assert r.returncode == 1 and "does not match the namespace" in r.stderr, r.stderr


def test_update_artifact_metadata_restarts_nothing(kube: Kube, operator: Operator, namespace: str) -> None:
    plugin(kube, "-n", namespace, "create", "workload", "my-app", "--image", "registry.example/app:1",
           "--port", "8080", "--description", "v1")
    wait_running(kube, namespace, "my-app")
    before, digest = pod_names(kube, namespace, "my-app"), spec_digest(kube, namespace, "my-app", 1)

    r = plugin(kube, "-n", namespace, "update", "artifact", "my-app", "--description", "v2", "--display-name", "Mine")
    assert r.stdout == "artifact.kiln.dev/my-app patched\n"
    art = get(kube, namespace, "artifacts", "my-app")
    assert (art["spec"]["description"], art["spec"]["displayName"]) == ("v2", "Mine")
    assert spec_digest(kube, namespace, "my-app", 2) == digest  # metadata is not in the digest
    time.sleep(3)  # the operator had its chance to restart something
    assert pod_names(kube, namespace, "my-app") == before
    assert wait_running(kube, namespace, "my-app")["status"]["artifact"]["specDigest"] == digest
    # '' removes a field.
    r = plugin(kube, "-n", namespace, "update", "kart/my-app", "--display-name", "", "-o", "json")
    assert "displayName" not in json.loads(r.stdout)["spec"]


def test_update_artifact_container_restarts_the_workload(kube: Kube, operator: Operator, namespace: str,
                                                         tmp_path: Path) -> None:
    plugin(kube, "-n", namespace, "create", "workload", "my-app", "--image", "registry.example/app:1",
           "--port", "8080", "--env", "LOG_LEVEL=info", "--env", "DROP=me", "--readiness-path", "/ready")
    wait_running(kube, namespace, "my-app")
    before = pod_names(kube, namespace, "my-app")

    r = plugin(kube, "-n", namespace, "update", "artifact", "my-app", "--image", "registry.example/app:2",
               "--env", "LOG_LEVEL=debug", "--env", "DROP-", "--env", "NEW=1", "--liveness-path", "/healthz",
               "--readiness-path", "/ready2", "--args", '["--model", "v2"]')
    assert r.stdout == "artifact.kiln.dev/my-app patched\n"
    (c,) = get(kube, namespace, "artifacts", "my-app")["spec"]["containers"]
    assert c["image"] == "registry.example/app:2" and c["args"] == ["--model", "v2"]
    assert c["env"] == [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "NEW", "value": "1"}]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]  # kept
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready2", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    digest = spec_digest(kube, namespace, "my-app", 2)

    # The workload restarts onto it: new pods, the new image, the new digest.
    kube.wait(lambda: (n := pod_names(kube, namespace, "my-app")) and n.isdisjoint(before), what="pods replaced")
    wl = wait_running(kube, namespace, "my-app")
    assert wl["status"]["artifact"]["specDigest"] == digest
    (pod,) = [p for p in kube.core.list_namespaced_pod(namespace, label_selector="kiln.dev/workload=my-app").items
              if not p.metadata.deletion_timestamp]
    assert pod.spec.containers[0].image == "registry.example/app:2"

    # -f FILE replaces the whole artifact (kubectl replace -f), without a resourceVersion as kubectl takes it.
    art = get(kube, namespace, "artifacts", "my-app")
    art["spec"]["containers"][0]["image"] = "registry.example/app:3"
    manifest = tmp_path / "artifact.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": art["apiVersion"], "kind": "Artifact",
                                        "metadata": {"name": "my-app"}, "spec": art["spec"]}))
    r = plugin(kube, "-n", namespace, "update", "-f", str(manifest))
    assert r.stdout == "artifact.kiln.dev/my-app replaced\n"
    assert get(kube, namespace, "artifacts", "my-app")["spec"]["containers"][0]["image"] == "registry.example/app:3"
    # A container it does not have: exit 1.
    r = plugin(kube, "-n", namespace, "update", "artifact", "my-app", "-c", "sidecar", "--image", "x", check=False)
    assert r.returncode == 1 and "no container 'sidecar'" in r.stderr


def test_update_refused_on_a_registered_artifact(kube: Kube, operator: Operator, namespace: str) -> None:
    registered_workload(kube, namespace, "locked")
    running = pod_names(kube, namespace, "locked")
    image = get(kube, namespace, "artifacts", "locked")["spec"]["containers"][0]["image"]

    r = plugin(kube, "-n", namespace, "update", "artifact", "locked", "--image", "registry.example/app:9", check=False)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.startswith("Error from server (") and "locked" in r.stderr and "Registered" in r.stderr, r.stderr
    assert "spec.containers" in r.stderr, r.stderr
    art = get(kube, namespace, "artifacts", "locked")
    art["spec"]["containers"][0]["image"] = "registry.example/app:9"
    r = plugin(kube, "-n", namespace, "update", "-f", "-", check=False, input=json.dumps(
        {"apiVersion": art["apiVersion"], "kind": "Artifact", "metadata": {"name": "locked"}, "spec": art["spec"]}))
    assert r.returncode == 1 and r.stderr.startswith("Error from server (") and "locked" in r.stderr, r.stderr
    assert get(kube, namespace, "artifacts", "locked")["spec"]["containers"][0]["image"] == image

    # Its metadata stays editable; nothing restarts.
    r = plugin(kube, "-n", namespace, "update", "artifact", "locked", "--description", "in production")
    assert r.returncode == 0 and get(kube, namespace, "artifacts", "locked")["spec"]["description"] == "in production"
    assert pod_names(kube, namespace, "locked") == running


# --- the seed's tutorial, with `kubectl kiln` verbs only -------------------------------------------------


def run_plugin_tutorial(kube: Kube, ns: str, images: dict[str, str],
                        call: Any = None) -> None:
    """examples/README.md's steps, each a `kubectl kiln` verb (the approver's RoleBinding aside, which is
    the cluster admin's business). ``call(kind, name, version)``, on the real node, asks the model."""

    def kiln(*args: str, check: bool = True, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return plugin(kube, *(["--as", user] if user else []), "-n", ns, *args, check=check, timeout=120)

    def model(kind: str, name: str, version: str) -> None:
        if call is not None:
            call(kiln, kind, name, version)

    def pods() -> set[str]:
        return pod_names(kube, ns, "my-app")

    # Step 1: a Workload with an inline artifact: its Draft Artifact, its pod.
    kiln("create", "workload", "my-app", "--image", images["v1"], "--port", "8080", "--env", "LOG_LEVEL=info",
         "--requests", "cpu=100m,memory=128Mi", "--limits", "memory=256Mi", "--readiness-path", "/ready",
         "--display-name", "My App", "--description", "v1")
    wait_running(kube, ns, "my-app", timeout=120)
    assert get(kube, ns, "artifacts", "my-app")["spec"]["lifecycle"] == "Draft"
    step1 = pods()
    assert len(step1) == 1
    model("workload", "my-app", "v1")

    # 2a: metadata only: nothing restarts.
    kiln("update", "artifact", "my-app", "--description", "v2")
    spec_digest(kube, ns, "my-app", 2)
    assert pods() == step1

    # 2b: the container spec: version 2 of the model, a liveness probe; the workload restarts onto it.
    kiln("update", "artifact", "my-app", "--image", images["v2"], "--env", "LOG_LEVEL=debug",
         "--liveness-path", "/healthz")
    digest = spec_digest(kube, ns, "my-app", 3)
    wait_for(kube, ns, "workloads", "my-app", lambda w: ((w.get("status") or {}).get("artifact") or {}).get(
        "specDigest") == digest, "workload on the new digest", timeout=120)
    step2 = kube.wait(lambda: (p := pods()) and p.isdisjoint(step1) and p, what="only the new pod", timeout=90)
    assert len(step2) == 1
    wait_running(kube, ns, "my-app", timeout=120)
    model("workload", "my-app", "v2")

    # 2c: stop, then start.
    assert kiln("stop", "workload", "my-app").stdout == "workload.kiln.dev/my-app stopped\n"
    wait_for(kube, ns, "workloads", "my-app", lambda w: (w.get("status") or {}).get("state") == "Stopped"
             and not pods(), "stopped, no pods", timeout=90)
    kiln("start", "workload", "my-app")
    wait_running(kube, ns, "my-app", timeout=120)
    running = pods()
    model("workload", "my-app", "v2")

    # Step 3: register: locked, nothing restarts; a change of its containers is refused.
    kiln("register", "artifact", "my-app")
    art = wait_for(kube, ns, "artifacts", "my-app",
                   lambda a: a if (a.get("status") or {}).get("lifecycle") == "Registered" else None, "registered")
    assert art["status"]["registeredBy"] == ADMIN
    # Its image resolved to a digest (the local registry) is covered by the spec digest; a made-up
    # registry's tag is kept and adds nothing.
    resolved = [i for i in art["status"]["images"] if i.get("digest")]
    pinned = art["status"]["specDigest"]
    assert (pinned != digest) == bool(resolved) and len(resolved) == (0 if "registry.example" in images["v2"] else 1)
    r = kiln("update", "artifact", "my-app", "--image", images["v2"].rsplit(":", 1)[0] + ":v3", check=False)
    assert r.returncode == 1 and "Registered" in r.stderr and "my-app" in r.stderr, r.stderr
    r = kiln("update", "-f", str(EXAMPLES / "03-artifact-my-app-v3.yaml"), check=False)  # kubectl replace -f
    assert r.returncode == 1 and "Registered" in r.stderr and "my-app" in r.stderr, r.stderr
    assert pods() == running

    # Step 4: promote (High: it waits for an approval), approved by alice, an approver who did not request it.
    r = kiln("promote", "workload", "my-app", "--name", "my-app", "--importance", "High", "--replicas", "2")
    assert r.stdout.startswith("deployment.kiln.dev/my-app created from workload my-app (artifact my-app)"), r.stdout
    wait_for(kube, ns, "deployments", "my-app", lambda d: approved_reason(d) == "AwaitingApproval", "awaiting")
    assert not kube.exists(kube.apps.read_namespaced_deployment, "my-app", ns), "rolled out unapproved"
    bind(kube, ns, APPROVER, "approver")  # kubectl create rolebinding alice-approver --clusterrole=kiln-approver
    kiln("approve", "deployment", "my-app", "--comment", "reviewed the scorer v2 metrics", user=APPROVER)
    dep = wait_for(kube, ns, "deployments", "my-app", lambda d: d if (Kube.condition(d, "Ready") or {}).get(
        "status") == "True" and (d.get("status") or {}).get("readyReplicas") == 2 else None, "ready", timeout=180)
    assert dep["status"]["artifact"]["specDigest"] == pinned
    rows = columns(kiln("history", "deployment", "my-app").stdout)
    assert [(h["ACTION"], h["ACTOR"]) for h in rows[:3]] == [("ApprovalRequested", ADMIN), ("Approved", APPROVER),
                                                             ("Created", ADMIN)], rows
    tree = [row["NAME"] for row in columns(kiln("get", "my-app").stdout)]
    assert tree[0] == "Artifact/my-app" and "├─Workload/my-app" in tree and "└─Deployment/my-app" in tree, tree
    model("deployment", "my-app", "v2")


def test_the_seed_tutorial_with_plugin_verbs_only(kube: Kube, operator: Operator, namespace: str) -> None:
    run_plugin_tutorial(kube, namespace, {"v1": "registry.example/scorer:v1", "v2": "registry.example/scorer:v2"})
