"""`kubectl kiln` (operator/kiln/plugin.py) driven as a subprocess, the way a user runs it, against the real
API server with the real operator: each verb's effect on the API objects, its --help naming its kubectl
equivalent, kubectl's conventions (-n, --context, --kubeconfig, --as, -o, exit codes), completion.
`call` needs the real node's model server: tests/e2e/test_plugin_call.py."""

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

VERBS = {  # verb: what its --help must name (its kubectl equivalent)
    "stop": """kubectl patch workload.kiln.dev NAME --type merge -p '{"spec":{"state":"Stopped"}}'""",
    "start": """kubectl patch workload.kiln.dev NAME --type merge -p '{"spec":{"state":"Running"}}'""",
    "restart": "kubectl annotate workload.kiln.dev NAME --overwrite kiln.dev/restartedAt=",
    "register": """kubectl patch artifact.kiln.dev NAME --type merge -p '{"spec":{"lifecycle":"Registered"}}'""",
    "promote": "spec: {workloadRef: {name: NAME}",
    "approve": "decision: Approve",
    "reject": "decision: Reject",
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
    assert bash_complete("approve", "") == ["deployment"]
    assert bash_complete("promote", "workload", "x", "--importance", "") == ["Critical", "High", "Moderate", "Low"]
    assert "--watch" in bash_complete("get", "x", "--w")

    # Names come from the API server, in the namespace given.
    create(kube, namespace, workload("alpha", inline=[container()]))
    create(kube, namespace, workload("beta", inline=[container()]))
    assert bash_complete("-n", namespace, "stop", "workload", "") == ["alpha", "beta"]
    assert bash_complete("get", "--namespace", namespace, "a") == ["alpha"]
    # kubectl's plugin completion (kubectl 1.26+) asks kubectl_complete-kiln, Cobra's protocol.
    r = subprocess.run([str(BIN / "kubectl_complete-kiln"), "-n", namespace, "restart", "workload", "b"],
                       env=env(kube), text=True, capture_output=True, timeout=30)
    assert r.stdout.split("\n")[:2] == ["beta", ":4"], r.stdout
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
    assert list(rows[0]) == ["TIME", "GENERATION", "ACTION", "ACTOR", "ARTIFACT", "DIGEST", "REPLICAS",
                             "IMPORTANCE", "MESSAGE"]
    assert [(h["ACTION"], h["ACTOR"]) for h in rows[:3]] == [("ApprovalRequested", DEPLOYER), ("Approved", APPROVER),
                                                             ("Created", DEPLOYER)], r.stdout
    assert rows[1]["MESSAGE"] == "looks good" and rows[2]["DIGEST"].startswith("sha256:")
    assert (rows[2]["ARTIFACT"], rows[2]["REPLICAS"], rows[2]["IMPORTANCE"]) == ("scorer", "2", "High")
    history = dep["status"]["history"]
    as_json = json.loads(plugin(kube, "-n", namespace, "history", "deployment", "scorer-prod", "-o", "json").stdout)
    as_yaml = yaml.safe_load(plugin(kube, "-n", namespace, "history", "deployment", "scorer-prod", "-o", "yaml").stdout)
    assert as_json == as_yaml and as_json[:3] == history[:3]


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
