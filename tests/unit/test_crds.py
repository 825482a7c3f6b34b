"""The generated CRDs: structural, documented, bounded, with the agreed names, CEL rules and columns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.api import crds
from kiln.api import models as api

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"
CRDS = {crd["spec"]["names"]["kind"]: crd for crd in crds.build_crds()}
Schema = dict[str, Any]


def root(kind: str) -> Schema:
    schema: Schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def spec_schema(kind: str) -> Schema:
    spec: Schema = root(kind)["properties"]["spec"]
    return spec


def container_schema() -> Schema:
    props: Schema = spec_schema("Artifact")["properties"]["containers"]["items"]
    return props


def walk(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def all_nodes() -> Iterator[tuple[str, str, Schema]]:
    for kind in CRDS:
        for path, node in walk(root(kind)):
            yield kind, path, node


def test_generated_crds_are_up_to_date(tmp_path: Path) -> None:
    written = crds.write_crds(tmp_path)
    assert sorted(p.name for p in written) == [
        "approvalpolicies.kiln.dev.yaml",
        "approvals.kiln.dev.yaml",
        "artifacts.kiln.dev.yaml",
        "deployments.kiln.dev.yaml",
        "workloads.kiln.dev.yaml",
    ]
    for path in written:
        committed = REPO_CRDS / path.name
        assert committed.exists(), f"{committed} is missing: run `make crds`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is out of date with operator/kiln/api.py: run `make crds` "
            "(python -m kiln.api.crds) and commit the result"
        )


def test_output_is_deterministic_and_plain_yaml() -> None:
    for crd in crds.build_crds():
        text = crds.to_yaml(crd)
        assert text == crds.to_yaml(crds.build_crds()[list(CRDS).index(crd["spec"]["names"]["kind"])])
        assert "&id" not in text
        assert "*id" not in text
        assert yaml.safe_load(text) == crd


def test_main_writes_to_given_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crds.main([str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "approvalpolicies.kiln.dev.yaml",
        "approvals.kiln.dev.yaml",
        "artifacts.kiln.dev.yaml",
        "deployments.kiln.dev.yaml",
        "workloads.kiln.dev.yaml",
    ]
    assert "artifacts.kiln.dev.yaml" in capsys.readouterr().out
    assert crds.DEFAULT_OUTDIR == REPO_CRDS


@pytest.mark.parametrize(
    ("kind", "plural", "short"),
    [
        ("Artifact", "artifacts", "kart"),
        ("Workload", "workloads", "kwl"),
        ("Deployment", "deployments", "kdep"),
    ],
)
def test_names(kind: str, plural: str, short: str) -> None:
    crd = CRDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"] == {"name": f"{plural}.kiln.dev"}
    assert crd["spec"]["group"] == "kiln.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert names == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": [short],
        "categories": ["kiln"],
    }
    assert not {"deploy", "wl", "deployment", "workload"} & set(names["shortNames"])
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert root(kind)["required"] == ["spec"]


def test_schemas_are_structural() -> None:
    for kind, path, node in all_nodes():
        where = f"{kind}{path}"
        assert not {"$ref", "$defs"} & set(node), where
        assert "title" not in node, where
        assert node.get("additionalProperties") is not True, where
        assert "x-kubernetes-preserve-unknown-fields" not in node, where
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, where
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], where
        else:
            assert not {"anyOf", "oneOf", "allOf", "not"} & set(node), where
            assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, where
        for req in node.get("required", []):
            assert req in node["properties"], f"{where}: required {req} is not a property"
        if "default" in node and where.endswith(".status"):
            # The one object default: a new object reads back as not yet observed (kstatus, Argo CD).
            assert node["default"] == {"observedGeneration": 0}, where
        elif "default" in node:
            assert isinstance(node["default"], str | int | bool), where


def test_every_field_is_described() -> None:
    for kind, path, node in all_nodes():
        for name, sub in node.get("properties", {}).items():
            if path == "" and name == "metadata":
                continue
            assert sub.get("description"), f"{kind}{path}.{name} has no description"


def test_spec_is_bounded_for_cel_cost() -> None:
    for kind in CRDS:
        for path, node in walk(spec_schema(kind), ".spec"):
            if node.get("type") == "array":
                assert "maxItems" in node, f"{kind}{path}"
            if node.get("type") == "string":
                assert "maxLength" in node or "enum" in node, f"{kind}{path}"
            if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
                assert "maxProperties" in node, f"{kind}{path}"


def test_container_schema() -> None:
    c = container_schema()
    props = c["properties"]
    assert c["required"] == ["name", "image"]
    assert props["name"]["maxLength"] == 63
    assert props["name"]["pattern"] == api.DNS_LABEL_PATTERN
    assert props["image"]["minLength"] == 1
    for forbidden in ("securityContext", "privileged", "volumeMounts", "lifecycle"):
        assert forbidden not in props
    assert set(props) >= {
        "name",
        "image",
        "command",
        "args",
        "workingDir",
        "env",
        "envFrom",
        "ports",
        "resources",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "imagePullPolicy",
    }
    assert props["imagePullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert props["command"]["maxItems"] == props["args"]["maxItems"] == 256


def test_list_maps() -> None:
    containers = spec_schema("Artifact")["properties"]["containers"]
    assert (containers["minItems"], containers["maxItems"]) == (1, 16)
    assert containers["x-kubernetes-list-type"] == "map"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    props = container_schema()["properties"]
    assert props["env"]["x-kubernetes-list-map-keys"] == ["name"]
    assert props["env"]["maxItems"] == 256
    assert props["ports"]["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
    assert props["ports"]["maxItems"] == 64
    # Every key of a list-map must be required or defaulted.
    for kind, path, node in all_nodes():
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], (
                    f"{kind}{path}: list-map key {key} is neither required nor defaulted"
                )
    port = props["ports"]["items"]["properties"]
    assert port["protocol"] == {
        "description": port["protocol"]["description"],
        "type": "string",
        "enum": ["TCP", "UDP", "SCTP"],
        "default": "TCP",
    }
    assert (port["containerPort"]["minimum"], port["containerPort"]["maximum"]) == (1, 65535)


def test_int_or_string_fields() -> None:
    props = container_schema()["properties"]
    for which in ("requests", "limits"):
        res = props["resources"]["properties"][which]
        assert res["type"] == "object"
        assert res["additionalProperties"]["x-kubernetes-int-or-string"] is True
    probe = props["readinessProbe"]["properties"]
    assert probe["httpGet"]["properties"]["port"]["x-kubernetes-int-or-string"] is True
    assert probe["tcpSocket"]["properties"]["port"]["x-kubernetes-int-or-string"] is True
    assert probe["grpc"]["properties"]["port"]["type"] == "integer"
    assert set(probe) >= {
        "httpGet",
        "tcpSocket",
        "exec",
        "grpc",
        "initialDelaySeconds",
        "periodSeconds",
        "timeoutSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    }
    env_from = props["env"]["items"]["properties"]["valueFrom"]["properties"]
    assert set(env_from) == {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}


def test_artifact_spec_schema() -> None:
    spec = spec_schema("Artifact")
    assert spec["required"] == ["containers"]
    props = spec["properties"]
    assert props["lifecycle"]["enum"] == ["Draft", "Registered"]
    assert props["lifecycle"]["default"] == "Draft"
    assert props["displayName"]["maxLength"] == 253
    assert props["description"]["maxLength"] == 4096


def artifact_rules() -> list[Schema]:
    rules: list[Schema] = spec_schema("Artifact")["x-kubernetes-validations"]
    return rules


WHY = " is locked: the Artifact is Registered; create a new Artifact to change it"
WHY_MANY = " are locked: the Artifact is Registered; create a new Artifact to change them"
REGISTERED_GUARD = "!(has(oldSelf.lifecycle) && oldSelf.lifecycle == 'Registered')\n|| "


def test_artifact_no_return_rule() -> None:
    no_return = artifact_rules()[0]
    assert no_return["message"] == (
        "spec.lifecycle: the Artifact is Registered and cannot return to Draft; create a new Artifact to iterate on"
    )
    assert no_return["message"] == api.ARTIFACT_NO_RETURN_MESSAGE
    assert no_return["fieldPath"] == ".lifecycle"
    assert no_return["reason"] == "FieldValueForbidden"
    assert "oldSelf.lifecycle == 'Registered'" in no_return["rule"]
    assert "has(oldSelf.lifecycle)" in no_return["rule"]


def test_artifact_lock_rule_messages() -> None:
    """One rule per locked field (or group), each message naming it; the API server shows the message."""
    messages = [r["message"] for r in artifact_rules()[1:]]
    assert messages == [
        "spec.containers is locked: the Artifact is Registered; "
        "create a new Artifact to add, remove, rename or reorder containers",
        "spec.containers[].image" + WHY,
        "spec.containers[].command" + WHY,
        "spec.containers[].args" + WHY,
        "spec.containers[].env" + WHY,
        "spec.containers[].ports" + WHY,
        "spec.containers[].resources" + WHY,
        "spec.containers[].readinessProbe, spec.containers[].livenessProbe, spec.containers[].startupProbe"
        + WHY_MANY,
        "spec.containers[].workingDir" + WHY,
        "spec.containers[].imagePullPolicy, spec.containers[].envFrom, spec.collection, spec.imagePullSecrets"
        + WHY_MANY,
    ]
    for rule in artifact_rules()[1:]:
        assert rule["rule"].startswith(REGISTERED_GUARD), rule["message"]
        assert rule["rule"].count("(") == rule["rule"].count(")"), rule["message"]
        # The backstop names spec fields too: its message says which.
        assert rule.get("fieldPath", ".containers") == ".containers"
        assert rule["reason"] == "FieldValueForbidden"
        assert "\n" not in rule["message"]
        expr = rule["messageExpression"]
        assert expr.count("(") == expr.count(")") and expr.count("[") == expr.count("]"), rule["message"]
        # Their estimated cost is unbounded: the API server would refuse the CRD.
        for unbounded in (".join(", ".indexOf(", "string("):
            assert unbounded not in expr, (rule["message"], unbounded)


def test_artifact_lock_message_expressions_name_the_changed_paths() -> None:
    rules = {r["message"].split(" ")[0]: r for r in artifact_rules()[1:]}
    image = rules["spec.containers[].image"]["messageExpression"]
    assert "'spec.containers[' + ['0', '1', " in image and "].image'" in image
    assert WHY[1:] in image and WHY_MANY[1:] in image
    assert " more'" in image
    probes = rules["spec.containers[].readinessProbe,"]["messageExpression"]
    assert "['readinessProbe', 'livenessProbe', 'startupProbe']" in probes
    names = rules["spec.containers"]["messageExpression"]
    assert names.startswith(repr(api.ARTIFACT_CONTAINERS_LOCKED_MESSAGE + " (registered: "))
    assert f"oldSelf.containers[{api.MAX_CONTAINERS - 1}].name" in names
    assert f"self.containers[{api.MAX_CONTAINERS - 1}].name" in names


def test_artifact_lock_rules_cover_every_locked_field_once() -> None:
    """Every container field but name has exactly one rule; the backstop checks only the rest."""
    grouped = [f for group in crds.CONTAINER_LOCKS for f in group]
    backstop = crds.backstop_container_fields()
    assert backstop == ["imagePullPolicy", "envFrom"]
    assert sorted([*grouped, *backstop, "name"]) == sorted(container_schema()["properties"])
    assert len(set(grouped)) == len(grouped)
    assert crds.backstop_spec_fields() == ["collection", "imagePullSecrets"]
    rules = artifact_rules()[1:]
    for field in container_schema()["properties"]:
        if field == "name":
            continue
        checking = [r["message"] for r in rules if f"c.{field} ==" in r["rule"]]
        assert len(checking) == 1, (field, checking)
        assert f"spec.containers[].{field}" in checking[0]
    for unlocked in ("displayName", "description"):
        for rule in rules:
            assert unlocked not in rule["rule"] and unlocked not in rule["messageExpression"]


def test_artifact_lock_rules_pair_containers_by_name_and_keep_order() -> None:
    rules = {r["message"].split(" ")[0]: r["rule"] for r in artifact_rules()[1:]}
    # Adding, removing, renaming or reordering containers is the containers rule's business alone.
    assert rules["spec.containers"].endswith(
        "self.containers.map(c, c.name) == oldSelf.containers.map(c, c.name)\n"
    )
    assert "self.containers.all(c, oldSelf.containers.all(o,\n    o.name != c.name || (" in rules[
        "spec.containers[].image"
    ]
    # Optional fields: set or unset on both sides.
    assert "has(c.command) == has(o.command) && (!has(c.command) || c.command == o.command)" in rules[
        "spec.containers[].command"
    ]
    # list-map equality ignores order in Kubernetes CEL: the keys are compared in order as well.
    assert "c.env == o.env && c.env.map(x, x.name) == o.env.map(x, x.name)" in rules["spec.containers[].env"]
    ports = rules["spec.containers[].ports"]
    assert "c.ports.map(x, x.containerPort) == o.ports.map(x, x.containerPort)" in ports
    assert "c.ports.map(x, x.protocol) == o.ports.map(x, x.protocol)" in ports
    # No other list-map inside a container, whose order the rules would miss.
    for path, node in walk(container_schema()):
        if node.get("x-kubernetes-list-type") == "map":
            assert path in (".env", ".ports"), path


def test_locked_message_templates() -> None:
    assert api.ARTIFACT_LOCKED_MESSAGE.format(field="spec.containers[0].image") == "spec.containers[0].image" + WHY
    assert api.ARTIFACT_LOCKED_MESSAGE_MANY.format(fields="a, b") == "a, b" + WHY_MANY
    with pytest.raises(ValueError, match="must start with"):
        crds._suffix("the {field} is locked", "{field}")


def test_workload_schema() -> None:
    spec = spec_schema("Workload")
    assert spec["x-kubernetes-validations"] == [
        {
            "rule": "has(self.artifactRef) != has(self.artifact)",
            "message": "spec: set exactly one of artifactRef or artifact",
        },
    ]
    inline, name = root("Workload")["x-kubernetes-validations"]
    assert inline["rule"].startswith(
        "!has(oldSelf.spec.artifact) ? !has(self.spec.artifact) : (\n  has(self.spec.artifact)\n")
    assert "self.spec.artifact == oldSelf.spec.artifact" in inline["rule"]
    assert "self.spec.artifact.containers.map(c, c.name) == oldSelf.spec.artifact.containers.map(c, c.name)" in (
        inline["rule"]
    )
    assert "c.env.map(x, x.name)" in inline["rule"] and "c.ports.map(x, x.protocol)" in inline["rule"]
    assert inline["message"] == api.WORKLOAD_INLINE_ARTIFACT_MESSAGE
    assert inline["messageExpression"] == (
        "'spec.artifact is a creation shortcut and cannot change: edit Artifact ' + self.metadata.name"
        " + ' instead (kubectl edit artifact.kiln.dev ' + self.metadata.name + ')'"
    )
    assert (inline["fieldPath"], inline["reason"]) == (".spec.artifact", "FieldValueForbidden")
    assert name == crds.WORKLOAD_NAME_VALIDATION
    props = spec["properties"]
    assert "required" not in spec
    assert (props["replicas"]["default"], props["replicas"]["minimum"], props["replicas"]["maximum"]) == (
        1,
        0,
        100,
    )
    assert props["state"]["enum"] == ["Running", "Stopped"]
    assert props["state"]["default"] == "Running"
    assert props["artifactRef"]["required"] == ["name"]
    assert set(props["artifact"]["properties"]) == {"displayName", "description", "containers"}
    assert props["artifact"]["required"] == ["containers"]
    status = root("Workload")["properties"]["status"]["properties"]
    assert status["state"]["enum"] == ["Pending", "Starting", "Running", "Stopped", "Failed"]
    assert set(status["artifact"]["properties"]) == {"name", "uid", "lifecycle", "specDigest"}
    assert set(status) >= {"observedGeneration", "conditions", "replicas", "readyReplicas", "restartedAt"}


def test_deployment_schema() -> None:
    spec = spec_schema("Deployment")
    assert spec["x-kubernetes-validations"] == [
        {"rule": "has(self.artifactRef) || has(self.workloadRef)", "message": api.DEPLOYMENT_REF_MESSAGE},
    ]
    assert root("Deployment")["x-kubernetes-validations"] == [crds.DEPLOYMENT_NAME_VALIDATION]
    props = spec["properties"]
    assert props["importance"]["enum"] == ["Critical", "High", "Moderate", "Low"]
    assert props["importance"]["default"] == "Moderate"
    assert props["replicas"]["default"] == 1
    pdb = props["podDisruptionBudget"]["properties"]["minAvailable"]
    assert pdb["x-kubernetes-int-or-string"] is True
    status = root("Deployment")["properties"]["status"]["properties"]
    assert status["history"]["maxItems"] == 50
    assert set(status["history"]["items"]["properties"]) == {
        "time",
        "actor",
        "action",
        "artifact",
        "artifactUid",
        "version",
        "fromVersion",
        "importance",
        "generation",
        "digest",
        "replicas",
        "message",
    }
    assert set(status["artifact"]["properties"]) == {"name", "uid", "collection", "version", "specDigest"}
    assert props["revisionHistoryLimit"]["default"] == 10
    assert props["artifactRef"]["x-kubernetes-validations"] == [
        {"rule": "has(self.name) != (has(self.collection) && has(self.version))", "message": api.ARTIFACT_REF_MESSAGE}]


def test_status_schemas() -> None:
    for kind in ("Artifact", "Workload", "Deployment"):  # what the operator reports on
        status = root(kind)["properties"]["status"]
        assert status["type"] == "object"
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert item["required"] == ["type", "status"]
        assert set(item["properties"]) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
        assert status["properties"]["observedGeneration"]["type"] == "integer"
    artifact = root("Artifact")["properties"]["status"]["properties"]
    assert set(artifact) >= {"lifecycle", "specDigest", "registeredAt", "registeredBy"}


def _model_rules() -> set[str]:
    """The messages of the rules the models declare (api.models.KilnModel.RULES)."""
    out: set[str] = set()
    todo: list[type] = [api.KilnModel]
    while todo:
        model = todo.pop()
        out |= {r.message for r in getattr(model, "RULES", ()) if r.cel}
        todo += model.__subclasses__()
    return out


def test_only_noted_cel_rules() -> None:
    """CEL rules sit on the spec and the root (the locks, the names), or on the nested objects whose
    models declare them, each with a one-line message."""
    declared = _model_rules()
    assert len(declared) >= 8
    for kind, path, node in all_nodes():
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] and "\n" not in rule["message"], f"{kind}{path}"
            assert path == ".spec" or (path == "" and kind in ("Workload", "Deployment", "Approval")) \
                or rule["message"] in declared, f"{kind}{path}: {rule['message']}"


def test_name_rules() -> None:
    for rule, length in ((crds.WORKLOAD_NAME_VALIDATION, 59), (crds.DEPLOYMENT_NAME_VALIDATION, 63)):
        assert rule["rule"].startswith(f"oldSelf.hasValue() || (size(self.metadata.name) <= {length} && ")
        assert rule["optionalOldSelf"] is True  # checked at creation: older objects stay updatable
        assert rule["fieldPath"] == ".metadata.name"
        assert rule["message"].startswith(f"metadata.name must be a DNS label of at most {length} characters")
    assert "endsWith('-dev')" in crds.DEPLOYMENT_NAME_VALIDATION["rule"]
    for kind in ("Workload", "Deployment"):
        meta = root(kind)["properties"]["metadata"]
        # Declared so that fieldPath may point at metadata.name, bounded so that messages quoting it
        # have a bounded estimated cost (CEL substitutes unbounded strings unless both are declared).
        assert meta["properties"]["name"]["maxLength"] == meta["properties"]["generateName"]["maxLength"] == 253
    assert root("Artifact")["properties"]["metadata"] == {"type": "object"}


def columns(kind: str) -> dict[str, Schema]:
    return {c["name"]: c for c in CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]}


def test_printer_columns() -> None:
    ready = '.status.conditions[?(@.type=="Ready")].status'
    art = columns("Artifact")
    assert art["Display"]["jsonPath"] == ".spec.displayName"
    assert art["Lifecycle"]["jsonPath"] == ".spec.lifecycle"
    assert (art["Collection"]["jsonPath"], art["Version"]["jsonPath"]) == (".spec.collection", ".status.version")
    assert (art["Digest"]["jsonPath"], art["Digest"]["priority"]) == (".status.specDigest", 1)
    assert art["Ready"]["jsonPath"] == ready
    wl = columns("Workload")
    assert wl["Artifact"]["jsonPath"] == ".status.artifact.name"
    assert wl["State"]["jsonPath"] == ".status.state"
    assert wl["Ready"]["jsonPath"] == ready
    assert wl["Replicas"]["jsonPath"] == ".spec.replicas"
    assert wl["Ready-Replicas"]["jsonPath"] == ".status.readyReplicas"
    dep = columns("Deployment")
    assert dep["Artifact"]["jsonPath"] == ".status.artifact.name"  # what production runs, named either way
    assert dep["Version"]["jsonPath"] == ".status.artifact.version"
    assert dep["Importance"]["jsonPath"] == ".spec.importance"
    assert dep["Ready"]["jsonPath"] == ready
    assert dep["Digest"]["priority"] == 1
    for kind in CRDS:
        cols = columns(kind)
        assert list(cols)[-1] == "Age"
        assert cols["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        for col in cols.values():
            assert col["type"] in {"string", "integer", "date"}
