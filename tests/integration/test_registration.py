"""Registration locks an Artifact: every client path meets the same rules, with or without the operator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.integration.test_workloads import (
    G,
    V,
    artifact,
    container,
    create,
    get,
    patch,
    pod_names,
    wait_running,
    workload,
)
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
LOCKED = "Registered"  # CEL (which runs first) and the webhook both say why: the artifact is Registered


def register(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    patch(kube, ns, "artifacts", name, {"spec": {"lifecycle": "Registered"}})
    return kube.wait(lambda: (a := get(kube, ns, "artifacts", name)).get("status", {}).get("registeredBy") and a,
                     what=f"artifact {name} registered")


def rejected(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ApiException) as err:
        fn(*args, **kwargs)
    assert err.value.status in (400, 403, 409, 422), err.value.body
    return str(json.loads(err.value.body)["message"])


def kubectl_rejected(kube: Kube, *args: str, input: str | None = None) -> str:
    r = kube.kubectl(*args, input=input, check=False)
    assert r.returncode != 0, r.stdout
    return r.stderr


@pytest.fixture
def registered(kube: Kube, operator: Operator, namespace: str) -> str:
    create(kube, namespace, artifact("locked", [container("registry.example/app:1")], description="v1"))
    kube.wait(lambda: get(kube, namespace, "artifacts", "locked").get("status", {}).get("specDigest"),
              what="draft digest")
    register(kube, namespace, "locked")
    return namespace


def test_registration_records_digest_who_and_when_and_restarts_nothing(
        kube: Kube, operator: Operator, namespace: str) -> None:
    create(kube, namespace, artifact("app", [container()]))
    create(kube, namespace, workload("runner", ref="app"))
    draft_digest = wait_running(kube, namespace, "runner")["status"]["artifact"]["specDigest"]
    before = pod_names(kube, namespace, "runner")

    art = register(kube, namespace, "app")
    st = art["status"]
    assert st["lifecycle"] == "Registered"
    assert st["specDigest"] == draft_digest
    assert st["registeredBy"] == "kiln-admin"  # the CN of the client certificate that made the request
    assert st["registeredAt"].endswith("Z")
    assert Kube.condition(art, "Ready")["reason"] == "Registered"
    kube.wait(lambda: get(kube, namespace, "workloads", "runner")["status"]["artifact"]["lifecycle"] == "Registered",
              what="workload sees the registration")
    assert pod_names(kube, namespace, "runner") == before, "registration restarts nothing"


@pytest.mark.parametrize("how", ["merge", "json", "replace", "apply", "server-side-apply"])
def test_locked_spec_rejected_on_every_client_path(kube: Kube, registered: str, how: str) -> None:
    ns = registered
    changed = artifact("locked", [container("registry.example/app:2")], description="v1", lifecycle="Registered")
    if how == "merge":
        msg = rejected(patch, kube, ns, "artifacts", "locked",
                       {"spec": {"containers": [container("registry.example/app:2")]}})
    elif how == "json":
        msg = kubectl_rejected(kube, "patch", "artifact.kiln.dev", "locked", "-n", ns, "--type=json", "-p",
                               '[{"op":"replace","path":"/spec/containers/0/image","value":"registry.example/app:2"}]')
    elif how == "replace":
        msg = kubectl_rejected(kube, "replace", "-n", ns, "-f", "-", input=json.dumps(changed))
    elif how == "apply":
        msg = kubectl_rejected(kube, "apply", "-n", ns, "-f", "-", input=json.dumps(changed))
    else:
        msg = kubectl_rejected(kube, "apply", "--server-side", "--force-conflicts", "-n", ns, "-f", "-",
                               input=json.dumps(changed))
    # The API server names the artifact; the CEL rule names the field and why.
    assert 'Artifact "locked"' in msg or 'Artifact.kiln.dev "locked"' in msg, msg
    error = [line for line in msg.strip().splitlines() if not line.startswith("Warning:")]
    assert len(error) == 1 and "spec.containers[0].image" in error[0] and LOCKED in error[0], msg
    assert get(kube, ns, "artifacts", "locked")["spec"]["containers"][0]["image"] == "registry.example/app:1"


@pytest.mark.parametrize("how", ["merge", "json", "replace", "server-side-apply"])
def test_display_name_description_and_metadata_stay_editable(kube: Kube, registered: str, how: str) -> None:
    ns = registered
    if how == "merge":
        patch(kube, ns, "artifacts", "locked", {"spec": {"displayName": "Locked", "description": "v2"}})
    elif how == "json":
        kube.kubectl("patch", "artifact.kiln.dev", "locked", "-n", ns, "--type=json", "-p",
                     '[{"op":"add","path":"/spec/description","value":"v2"}]')
    elif how == "replace":
        obj = get(kube, ns, "artifacts", "locked")
        obj["spec"]["description"] = "v2"
        obj.pop("status")
        kube.kubectl("replace", "-n", ns, "-f", "-", input=json.dumps(obj))
    else:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=editor", "-n", ns, "-f", "-",
                     input=json.dumps(artifact("locked", [container("registry.example/app:1")], description="v2",
                                               lifecycle="Registered")))
    patch(kube, ns, "artifacts", "locked", {"metadata": {"labels": {"team": "ml"}}})
    obj = get(kube, ns, "artifacts", "locked")
    assert obj["spec"]["description"] == "v2"
    assert obj["metadata"]["labels"]["team"] == "ml"


def test_registered_cannot_return_to_draft(kube: Kube, registered: str) -> None:
    msg = rejected(patch, kube, registered, "artifacts", "locked", {"spec": {"lifecycle": "Draft"}})
    assert '"locked"' in msg and "Draft" in msg and "Registered" in msg
    assert get(kube, registered, "artifacts", "locked")["spec"]["lifecycle"] == "Registered"


def test_registration_cannot_be_forged(kube: Kube, operator: Operator, namespace: str) -> None:
    forged = {"kiln.dev/registered-by": "mallory", "kiln.dev/registered-at": "2000-01-01T00:00:00Z"}
    body = artifact("forged", [container()])
    body["metadata"]["annotations"] = forged
    created = create(kube, namespace, body)
    assert not set(forged) & set(created["metadata"].get("annotations") or {}), "forged annotations dropped"
    # Registering while writing the annotations and the status through the main resource.
    patch(kube, namespace, "artifacts", "forged", {"metadata": {"annotations": forged},
                                                  "spec": {"lifecycle": "Registered"},
                                                  "status": {"registeredBy": "mallory"}})
    art = kube.wait(lambda: (a := get(kube, namespace, "artifacts", "forged")).get("status", {}).get("registeredBy")
                    and a, what="registration recorded")
    assert art["status"]["registeredBy"] == "kiln-admin"
    assert art["metadata"]["annotations"]["kiln.dev/registered-by"] == "kiln-admin"
    # Rewriting the record afterwards is undone too.
    patch(kube, namespace, "artifacts", "forged", {"metadata": {"annotations": forged}})
    art = get(kube, namespace, "artifacts", "forged")
    assert art["metadata"]["annotations"]["kiln.dev/registered-by"] == "kiln-admin"
    assert art["status"]["registeredBy"] == "kiln-admin"


def test_cel_alone_rejects_while_the_operator_is_stopped(kube: Kube, registered: str, operator: Operator) -> None:
    ns = registered
    operator.stop()
    try:
        assert not kube.exists(kube.admission.read_validating_webhook_configuration, Operator.WEBHOOK_CONFIG)
        msg = rejected(patch, kube, ns, "artifacts", "locked",
                       {"spec": {"containers": [container("registry.example/app:2")]}})
        assert "spec.containers" in msg and "locked" in msg
        msg = rejected(patch, kube, ns, "artifacts", "locked", {"spec": {"lifecycle": "Draft"}})
        assert "cannot return to Draft" in msg
        # Reordering containers is a change as well.
        two = [container("registry.example/a:1", port=None), {**container("registry.example/b:1", port=None),
                                                            "name": "side"}]
        create(kube, ns, artifact("pair", two, lifecycle="Registered"))
        msg = rejected(patch, kube, ns, "artifacts", "pair", {"spec": {"containers": list(reversed(two))}})
        assert "locked" in msg
        # Editable fields still are.
        patch(kube, ns, "artifacts", "locked", {"spec": {"description": "edited while the operator was down"}})
    finally:
        operator.start()


def test_server_side_dry_run_meets_the_same_rules(kube: Kube, registered: str) -> None:
    ns = registered
    msg = kubectl_rejected(kube, "patch", "artifact.kiln.dev", "locked", "-n", ns, "--dry-run=server",
                           "--type=merge", "-p", '{"spec":{"containers":[{"name":"app","image":"x:2"}]}}')
    assert LOCKED in msg and "image" in msg
    out = kube.kubectl("patch", "artifact.kiln.dev", "locked", "-n", ns, "--dry-run=server", "--type=merge",
                       "-p", '{"spec":{"description":"dry"}}', "-o", "jsonpath={.spec.description}").stdout
    assert out == "dry"
    assert get(kube, ns, "artifacts", "locked")["spec"]["description"] == "v1", "a dry run persists nothing"
    # Registration in a dry run: the record is computed, nothing is stored.
    create(kube, ns, artifact("draft", [container()]))
    out = kube.kubectl("patch", "artifact.kiln.dev", "draft", "-n", ns, "--dry-run=server", "--type=merge",
                       "-p", '{"spec":{"lifecycle":"Registered"}}', "-o",
                       "jsonpath={.metadata.annotations.kiln\\.dev/registered-by}").stdout
    assert out == "kiln-admin"
    assert get(kube, ns, "artifacts", "draft")["spec"]["lifecycle"] == "Draft"


def test_malformed_and_oversized_updates_fail_clearly_and_lose_nothing(kube: Kube, registered: str) -> None:
    ns = registered
    before = get(kube, ns, "artifacts", "locked")
    msg = kubectl_rejected(kube, "patch", "artifact.kiln.dev", "locked", "-n", ns, "--type=merge", "-p",
                           '{"spec": {"description": ')
    assert "error decoding patch" in msg, msg
    msg = rejected(patch, kube, ns, "artifacts", "locked", {"spec": {"description": "x" * 5000}})
    assert "spec.description" in msg
    with pytest.raises(ApiException) as err:
        patch(kube, ns, "artifacts", "locked", {"spec": {"description": "x" * (4 * 1024 * 1024)}})
    assert err.value.status in (413, 422), err.value.status
    msg = rejected(patch, kube, ns, "artifacts", "locked", {"spec": {"containers": "not-a-list"}})
    assert "spec.containers" in msg
    after = get(kube, ns, "artifacts", "locked")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_deleting_a_registered_artifact_in_use_by_a_deployment_is_rejected(
        kube: Kube, registered: str, operator: Operator) -> None:
    ns = registered
    create(kube, ns, {"apiVersion": f"{G}/{V}", "kind": "Deployment", "metadata": {"name": "prod"},
                      "spec": {"artifactRef": {"name": "locked"}}})

    def refused() -> str | None:
        try:
            kube.custom.delete_namespaced_custom_object(G, V, ns, "artifacts", "locked", dry_run="All")
        except ApiException as e:
            return str(json.loads(e.body)["message"])
        return None

    msg = kube.wait(refused, what="deletion refused once the operator has indexed the Deployment")
    assert "Artifact locked is in use by Deployment prod" in msg
    kube.custom.delete_namespaced_custom_object(G, V, ns, "deployments", "prod")
    kube.wait(lambda: refused() is None, what="deletion allowed once unused")


def test_webhook_configuration_is_scoped_and_fast(kube: Kube, operator: Operator) -> None:
    for cfg in (kube.admission.read_validating_webhook_configuration(Operator.WEBHOOK_CONFIG),
                kube.admission.read_mutating_webhook_configuration(Operator.WEBHOOK_CONFIG)):
        for hook in cfg.webhooks:
            # Registration asks registries for digests and takes a version number (not on a dry run).
            registration = hook.name == "record-registration.kiln.dev"
            assert hook.timeout_seconds <= (15 if registration else 5)
            assert hook.side_effects == ("NoneOnDryRun" if registration else "None")
            # Updates that leave the spec alone (the operator's own writes) never reach a webhook.
            assert hook.match_conditions, hook.name
            for rule in hook.rules:
                assert rule.api_groups == ["kiln.dev"]
                assert set(rule.resources) <= {"artifacts", "workloads", "deployments", "approvals"}
                assert "*" not in rule.operations
    hooks = {h.name: h for h in kube.admission.read_mutating_webhook_configuration(Operator.WEBHOOK_CONFIG).webhooks}
    # Recording who registered must not be skipped, but only registering requests need the operator.
    rec = hooks["record-registration.kiln.dev"]
    assert rec.failure_policy == "Fail" and rec.match_conditions
    # Artifact validation does not block users while the operator is down (CEL holds). Workloads have
    # no validation webhook (their CRD's schema and CEL rules are all their validation), only the check
    # that their author may read what their pods would read, for requests that add a reference.
    validating = {h.name: h for h in kube.admission.read_validating_webhook_configuration(
        Operator.WEBHOOK_CONFIG).webhooks}
    assert validating["validate-artifact.kiln.dev"].failure_policy == "Ignore"
    assert [name for name, h in validating.items() for rule in h.rules if "workloads" in rule.resources] == [
        "check-workload-references.kiln.dev"]


def validate_artifact_calls(kube: Kube) -> float:
    """How many times the API server has called validate-artifact for an UPDATE (its own metrics)."""
    metrics = kube.kubectl("get", "--raw", "/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("apiserver_admission_webhook_admission_duration_seconds_count{")
               and 'name="validate-artifact.kiln.dev"' in line and 'operation="UPDATE"' in line)


def test_only_registered_artifacts_spec_changes_reach_the_webhook(kube: Kube, operator: Operator,
                                                                 namespace: str) -> None:
    """Draft edits are judged by the CRD's schema and CEL alone, with no webhook round trip; a
    Registered artifact's spec change is checked by the webhook as well."""
    ns = namespace
    create(kube, ns, artifact("iterating", [container("registry.example/app:1")]))
    before = validate_artifact_calls(kube)
    for i in range(3):
        patch(kube, ns, "artifacts", "iterating", {"spec": {"description": f"edit {i}",
                                                             "containers": [container(f"registry.example/app:{i}")]}})
    register(kube, ns, "iterating")
    assert validate_artifact_calls(kube) == before
    patch(kube, ns, "artifacts", "iterating", {"spec": {"description": "now registered"}})
    assert validate_artifact_calls(kube) == before + 1


def test_validating_webhook_names_the_artifact_and_the_changed_fields(kube: Kube, operator: Operator) -> None:
    """The webhook's own answer, over TLS, to the review the API server would send (CEL, which runs
    first, rejects such a change before the webhook sees it: this is its second line)."""
    old = artifact("locked", [container("registry.example/app:1")], lifecycle="Registered")
    new = artifact("locked", [container("registry.example/app:2", workingDir="/srv")], lifecycle="Registered")
    for body in (old, new):
        body["metadata"].update(namespace="default", uid="u-1")
    review = operator.review("validate-artifact", "artifacts", "UPDATE", new, old)
    assert review["allowed"] is False
    msg = review["status"]["message"]
    assert msg.startswith("Artifact locked is Registered and its spec is locked"), msg
    assert "spec.containers[0].image" in msg and "spec.containers[0].workingDir" in msg, msg
    # Registered -> Draft.
    back = artifact("locked", [container("registry.example/app:1")], lifecycle="Draft")
    back["metadata"].update(namespace="default", uid="u-1")
    review = operator.review("validate-artifact", "artifacts", "UPDATE", back, old)
    assert review["allowed"] is False and "cannot return to Draft" in review["status"]["message"]
    # Editable fields pass.
    edited = artifact("locked", [container("registry.example/app:1")], lifecycle="Registered", description="new")
    edited["metadata"].update(namespace="default", uid="u-1")
    assert operator.review("validate-artifact", "artifacts", "UPDATE", edited, old)["allowed"] is True
