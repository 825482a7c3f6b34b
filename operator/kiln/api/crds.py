"""Generate the Kiln CustomResourceDefinitions from the pydantic models in :mod:`kiln.api`.

    python -m kiln.api.crds [OUTDIR]      # default: the repository's crds/ directory (``make crds``)

The pydantic JSON schema is turned into a Kubernetes *structural* schema: ``$ref``\\ s inlined,
``title``\\ s dropped, ``Optional`` (``anyOf`` with ``null``) collapsed to the plain type (optional
fields are simply not ``required``), ``int | str`` rendered as ``x-kubernetes-int-or-string``, and
only scalar defaults kept (the API server applies them, so stored objects carry them). CEL rules
(``x-kubernetes-validations``) and printer columns are added here. Output is deterministic.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kiln.api import models as api

DEFAULT_OUTDIR = Path(__file__).resolve().parents[3] / "crds"
HEADER = "# Generated from operator/kiln/api/models.py by `make crds` (python -m kiln.api.crds). Do not edit.\n"

Schema = dict[str, Any]

# Key order in the emitted schemas, for readable YAML (other keys follow in pydantic's order).
_KEY_ORDER = [
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "anyOf",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
]
_DROP = {"title"}
_SCALARS = (str, int, float, bool)


# --------------------------------------------------------------------------------------------------
# pydantic JSON schema -> structural schema
# --------------------------------------------------------------------------------------------------


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline ``$ref``, single-element ``allOf`` and ``anyOf: [X, null]``; sibling keys win."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolve(target, defs), **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        (inner,) = node.pop("allOf")
        node = {**_resolve(inner, defs), **node}
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) == 1:
            del node["anyOf"]
            if node.get("default", 0) is None:
                del node["default"]
            node = {**_resolve(branches[0], defs), **node}
    return node


def _structural(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs)
    if "anyOf" in node:
        raise ValueError(f"{path}: unions are not allowed in a structural schema: {node['anyOf']}")
    if "x-kubernetes-int-or-string" in node:
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif "type" not in node:
        raise ValueError(f"{path}: no type in {node}")
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and (value is None or not isinstance(value, _SCALARS)):
            continue
        if key == "properties":
            value = {name: _structural(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _structural(value, defs, f"{path}[]")
        out[key] = value
    if out.get("additionalProperties") is True:
        raise ValueError(f"{path}: additionalProperties: true is not allowed")
    order = {k: i for i, k in enumerate(_KEY_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of a model (camelCase property names)."""
    raw = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs, model.__name__)


# --------------------------------------------------------------------------------------------------
# CEL rules
# --------------------------------------------------------------------------------------------------

_WAS_REGISTERED = "has(oldSelf.lifecycle) && oldSelf.lifecycle == 'Registered'"

# Container fields with a rule (and message) of their own once an Artifact is Registered; a group
# shares one rule. Every other container field (imagePullPolicy, envFrom, any field added later)
# and every other locked spec field is covered by one backstop rule, which checks only those, so
# that changing one field shows exactly one message, naming it.
CONTAINER_LOCKS: tuple[tuple[str, ...], ...] = (
    ("image",),
    ("command",),
    ("args",),
    ("env",),
    ("ports",),
    ("resources",),
    ("readinessProbe", "livenessProbe", "startupProbe"),
    ("workingDir",),
)


def _cel_str(text: str) -> str:
    """A CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cel_list(items: Sequence[str]) -> str:
    """A CEL list literal of strings."""
    return "[" + ", ".join(_cel_str(i) for i in items) + "]"


def _suffix(template: str, placeholder: str) -> str:
    head, found, tail = template.partition(placeholder)
    if head or not found:
        raise ValueError(f"message template must start with {placeholder}: {template!r}")
    return tail


def _unchanged(field: str, schema: Schema, required: bool, new: str, old: str) -> str:
    """CEL: ``new.field`` equals ``old.field`` (both unset counts as equal).

    Equality of ``x-kubernetes-list-type: map`` lists ignores their order in Kubernetes CEL, but the
    order matters here (env entries may reference earlier ones, the spec digest is order-sensitive),
    so the keys are compared in order as well (as lists: string concatenation of enum keys, which
    have no maxLength, would blow the estimated cost).
    """
    a, b = f"{new}.{field}", f"{old}.{field}"
    same = f"{a} == {b}"
    if schema.get("x-kubernetes-list-type") == "map":
        same += "".join(f" && {a}.map(x, x.{k}) == {b}.map(x, x.{k})" for k in schema["x-kubernetes-list-map-keys"])
    if required:
        return same
    if " && " in same:
        same = f"({same})"
    return f"has({a}) == has({b}) && (!has({a}) || {same})"


def _container_schema() -> Schema:
    return model_schema(api.Container)


def _spec_schema() -> Schema:
    return model_schema(api.ArtifactSpec)


def backstop_container_fields() -> list[str]:
    """Container fields not covered by a rule of their own (:data:`CONTAINER_LOCKS`), in schema order."""
    covered = {"name", *(f for group in CONTAINER_LOCKS for f in group)}
    return [f for f in _container_schema()["properties"] if f not in covered]


def backstop_spec_fields() -> list[str]:
    """Locked spec fields other than containers (none today), by wire name."""
    return [alias for alias in api.ArtifactSpec.locked_aliases() if alias != "containers"]


def _container_field_unchanged(field: str, new: str, old: str) -> str:
    schema = _container_schema()
    return _unchanged(field, schema["properties"][field], field in schema.get("required", []), new, old)


def _spec_field_unchanged(field: str) -> str:
    schema = _spec_schema()
    return _unchanged(field, schema["properties"][field], field in schema.get("required", []), "self", "oldSelf")


def _containers_unchanged(fields: Sequence[str]) -> str:
    """CEL: every container keeps ``fields``, paired with the old container of the same name (added,
    removed, renamed and reordered containers are the containers rule's business)."""
    same = "\n      && ".join(_container_field_unchanged(f, "c", "o") for f in fields)
    return f"self.containers.all(c, oldSelf.containers.all(o,\n    o.name != c.name || (\n      {same}\n    )\n  ))"


# The estimated cost of a messageExpression must stay bounded, which rules out join() and indexOf()
# on computed lists, string(int), and binding a computed list of strings (the size of its elements
# is lost). So the message is built from literals: the changed fields are listed as int codes
# (slot * MAX_CONTAINERS + container index), bound once with [codes].map(p, ...), and turned into
# paths by indexing literal lists of strings.
_SHOWN_PATHS = 3
_RANGE = "[" + ", ".join(str(i) for i in range(api.MAX_CONTAINERS)) + "]"
_INDEXES = _cel_list([str(i) for i in range(api.MAX_CONTAINERS)])


def _changed_container_codes(field: str, slot: int) -> str:
    """CEL: the codes of the containers (by index in self) whose ``field`` changed."""
    c = "self.containers[i]"
    same = _container_field_unchanged(field, c, "o")
    codes = (
        f"{_RANGE}.filter(i, i < size(self.containers)\n"
        f"      && oldSelf.containers.exists(o, o.name == {c}.name && !({same})))"
    )
    return codes + (f".map(i, {slot * api.MAX_CONTAINERS} + i)" if slot else "")


def _path_of_code(code: str, container_fields: Sequence[str], spec_fields: Sequence[str]) -> str:
    """CEL: the path a code stands for."""
    n = len(container_fields) * api.MAX_CONTAINERS
    if len(container_fields) == 1:
        container = f"'spec.containers[' + {_INDEXES}[{code}] + '].{container_fields[0]}'"
    else:
        container = (
            f"'spec.containers[' + {_INDEXES}[{code} % {api.MAX_CONTAINERS}] + '].' "
            f"+ {_cel_list(container_fields)}[{code} / {api.MAX_CONTAINERS}]"
        )
    if not spec_fields:
        return container
    spec = f"'spec.' + {_cel_list(spec_fields)}[{code} - {n}]"
    return spec if not container_fields else f"({code} < {n} ? {container} : {spec})"


def _locked_message_expression(container_fields: Sequence[str], spec_fields: Sequence[str] = ()) -> str:
    """CEL: "<path>[, <path>, <path> and N more] is/are locked: ..." naming the changed fields."""
    codes = [_changed_container_codes(f, slot) for slot, f in enumerate(container_fields)]
    n = len(container_fields) * api.MAX_CONTAINERS
    codes += [f"(({_spec_field_unchanged(f)}) ? [] : [{n + j}])" for j, f in enumerate(spec_fields)]
    total = n + len(spec_fields)

    def path(k: str) -> str:
        return _path_of_code(k, container_fields, spec_fields)

    shown = [path("p[0]")]
    shown += [f"(size(p) > {k} ? ', ' + {path(f'p[{k}]')} : '')" for k in range(1, min(_SHOWN_PATHS, total))]
    if total > _SHOWN_PATHS:
        more = _cel_list([str(k) for k in range(1, total - _SHOWN_PATHS + 1)])
        shown.append(f"(size(p) > {_SHOWN_PATHS} ? ' and ' + {more}[size(p) - {_SHOWN_PATHS + 1}] + ' more' : '')")
    one = _cel_str(_suffix(api.ARTIFACT_LOCKED_MESSAGE, "{field}"))
    many = _cel_str(_suffix(api.ARTIFACT_LOCKED_MESSAGE_MANY, "{fields}"))
    shown.append(f"(size(p) == 1 ? {one} : {many})")
    body = "\n    + ".join(codes)
    text = "\n    + ".join(shown)
    return f"[\n    {body}\n].map(p,\n    {text}\n)[0]\n"


def _locked_rule(clause: str, message: str, message_expression: str, field_path: str = ".containers") -> Schema:
    rule: Schema = {
        "rule": f"!({_WAS_REGISTERED})\n|| {clause}\n",
        "message": message,
        "messageExpression": message_expression,
        "fieldPath": field_path,
        "reason": "FieldValueForbidden",
    }
    if not field_path:
        del rule["fieldPath"]
    return rule


def _static_message(paths: Sequence[str]) -> str:
    if len(paths) == 1:
        return api.ARTIFACT_LOCKED_MESSAGE.format(field=paths[0])
    return api.ARTIFACT_LOCKED_MESSAGE_MANY.format(fields=", ".join(paths))


def container_lock_rule(fields: Sequence[str]) -> Schema:
    """The rule locking ``fields`` of every container once the Artifact is Registered."""
    return _locked_rule(
        _containers_unchanged(fields),
        _static_message([f"spec.containers[].{f}" for f in fields]),
        _locked_message_expression(fields),
    )


def _names(containers: str) -> str:
    """CEL: the container names of ``containers`` (at least one), comma-separated (no join(): see above)."""
    rest = "".join(
        f"\n  + (size({containers}) > {i} ? ', ' + {containers}[{i}].name : '')" for i in range(1, api.MAX_CONTAINERS)
    )
    return f"{containers}[0].name{rest}"


def containers_lock_rule() -> Schema:
    """Containers cannot be added, removed, renamed or reordered (the first one is the primary)."""
    return _locked_rule(
        "self.containers.map(c, c.name) == oldSelf.containers.map(c, c.name)",
        api.ARTIFACT_CONTAINERS_LOCKED_MESSAGE,
        f"{_cel_str(api.ARTIFACT_CONTAINERS_LOCKED_MESSAGE + ' (registered: ')}\n  + {_names('oldSelf.containers')}"
        f"\n  + '; requested: '\n  + {_names('self.containers')}\n  + ')'\n",
    )


def backstop_lock_rule() -> Schema | None:
    """Every other locked field: the container fields and spec fields without a rule of their own."""
    container_fields = backstop_container_fields()
    spec_fields = backstop_spec_fields()
    if not container_fields and not spec_fields:
        return None
    clauses = [_containers_unchanged(container_fields)] if container_fields else []
    clauses += [f"({_spec_field_unchanged(f)})" for f in spec_fields]
    return _locked_rule(
        "(\n  " + "\n  && ".join(clauses) + "\n)",
        _static_message([f"spec.containers[].{f}" for f in container_fields] + [f"spec.{f}" for f in spec_fields]),
        _locked_message_expression(container_fields, spec_fields),
        ".containers" if not spec_fields else "",
    )


def artifact_lock_rules() -> list[Schema]:
    """The transition rules locking a Registered Artifact's spec, one per field or group of fields."""
    rules = [containers_lock_rule(), *(container_lock_rule(g) for g in CONTAINER_LOCKS)]
    backstop = backstop_lock_rule()
    return rules + ([backstop] if backstop else [])


def artifact_spec_validations() -> list[Schema]:
    return [
        {
            "rule": f"!({_WAS_REGISTERED}) || (has(self.lifecycle) && self.lifecycle == 'Registered')",
            "message": api.ARTIFACT_NO_RETURN_MESSAGE,
            "fieldPath": ".lifecycle",
            "reason": "FieldValueForbidden",
        },
        *artifact_lock_rules(),
    ]


WORKLOAD_SPEC_VALIDATIONS: list[Schema] = [
    {"rule": "has(self.artifactRef) != has(self.artifact)", "message": api.WORKLOAD_ARTIFACT_MESSAGE},
]
DEPLOYMENT_SPEC_VALIDATIONS: list[Schema] = [
    {"rule": "has(self.artifactRef) || has(self.workloadRef)", "message": api.DEPLOYMENT_REF_MESSAGE},
]

# Checked at creation only (names cannot change): an older object with a longer name must stay
# updatable, or its finalizer could never be removed.
def _name_rule(max_length: int, message: str, extra: str = "") -> Schema:
    return {
        "rule": (f"oldSelf.hasValue() || (size(self.metadata.name) <= {max_length}"
                 f" && self.metadata.name.matches('{api.DNS_1035_PATTERN}'){extra})"),
        "message": message,
        "fieldPath": ".metadata.name",
        "optionalOldSelf": True,
    }


WORKLOAD_NAME_VALIDATION = _name_rule(api.MAX_WORKLOAD_NAME_LENGTH, api.WORKLOAD_NAME_MESSAGE)
DEPLOYMENT_NAME_VALIDATION = _name_rule(api.MAX_DEPLOYMENT_NAME_LENGTH, api.DEPLOYMENT_NAME_MESSAGE,
                                        f" && !self.metadata.name.endsWith('{api.DEV_SERVICE_SUFFIX}')")


def workload_inline_artifact_rule() -> Schema:
    """spec.artifact is a creation shortcut: it cannot be added, changed or removed afterwards.

    At the root, where metadata.name (the created Artifact's name) is in scope. Order-sensitive like
    the Artifact's lock: containers and, within them, env and ports in order.
    """
    containers = model_schema(api.InlineArtifact)["properties"]["containers"]
    item = containers["items"]["properties"]
    order = ["self.spec.artifact.containers.map(c, c.name) == oldSelf.spec.artifact.containers.map(c, c.name)"]
    for field, schema in item.items():
        for key in schema.get("x-kubernetes-list-map-keys", []):
            per = f"X.spec.artifact.containers.map(c, has(c.{field}) ? c.{field}.map(x, x.{key}) : [])"
            order.append(f"{per.replace('X', 'self')} == {per.replace('X', 'oldSelf')}")
    same = "\n  && ".join(["self.spec.artifact == oldSelf.spec.artifact", *order])
    return {
        "rule": (f"!has(oldSelf.spec.artifact) ? !has(self.spec.artifact) : (\n  has(self.spec.artifact)\n"
                 f"  && {same}\n)\n"),
        "message": api.WORKLOAD_INLINE_ARTIFACT_MESSAGE,
        "messageExpression": "'spec.artifact is a creation shortcut and cannot change: edit Artifact '"
        " + self.metadata.name + ' instead (kubectl edit artifact.kiln.dev ' + self.metadata.name + ')'",
        "fieldPath": ".spec.artifact",
        "reason": "FieldValueForbidden",
    }


def workload_validations() -> list[Schema]:
    return [workload_inline_artifact_rule(), WORKLOAD_NAME_VALIDATION]


DEPLOYMENT_VALIDATIONS: list[Schema] = [DEPLOYMENT_NAME_VALIDATION]


# --------------------------------------------------------------------------------------------------
# Printer columns
# --------------------------------------------------------------------------------------------------


def _col(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> Schema:
    col: Schema = {"name": name, "type": type_, "jsonPath": path}
    if description:
        col["description"] = description
    if priority:
        col["priority"] = priority
    return col


_READY = _col("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition")
_AGE = _col("Age", ".metadata.creationTimestamp", "date")

ARTIFACT_COLUMNS = [
    _col("Display", ".spec.displayName", description="Display name"),
    _col("Lifecycle", ".spec.lifecycle", description="Draft or Registered"),
    _col("Collection", ".spec.collection", description="The collection it is a version of"),
    _col("Version", ".status.version", "integer", description="Its version in the collection (from registration)"),
    _READY,
    _col("Digest", ".status.specDigest", priority=1, description="Digest of the locked spec"),
    _AGE,
]
WORKLOAD_COLUMNS = [
    _col("Artifact", ".status.artifact.name", description="Artifact being run"),
    _col("State", ".status.state", description="Observed state"),
    _READY,
    _col("Replicas", ".spec.replicas", "integer", description="Desired pods"),
    _col("Ready-Replicas", ".status.readyReplicas", "integer", description="Ready pods"),
    _col("Endpoint", ".status.endpoints[0].url", description="In-cluster URL of its first port"),
    _col("Digest", ".status.artifact.specDigest", priority=1, description="Digest of the spec being run"),
    _AGE,
]
DEPLOYMENT_COLUMNS = [
    _col("Artifact", ".status.artifact.name", description="The registered Artifact production runs"),
    _col("Version", ".status.artifact.version", "integer", description="Its version in its collection"),
    _col("Importance", ".spec.importance"),
    _col("Approved", '.status.conditions[?(@.type=="Approved")].status',
         description="Approved condition: the change it runs was approved as its policy asks"),
    _READY,
    _col("Replicas", ".spec.replicas", "integer", description="Desired pods"),
    _col("Ready-Replicas", ".status.readyReplicas", "integer", description="Ready pods"),
    _col("Endpoint", ".status.endpoints[0].url", description="In-cluster URL of its first port"),
    _col("Digest", ".status.artifact.specDigest", priority=1, description="Pinned artifact digest"),
    _AGE,
]
APPROVAL_COLUMNS = [
    _col("Deployment", ".spec.deploymentRef.name", description="The Deployment whose change it decides"),
    _col("Generation", ".spec.generation", "integer", description="The change (Deployment generation)"),
    _col("Decision", ".spec.decision", description="Approve or Reject"),
    _col("Approver", ".spec.approver", description="Who decided (from the request's identity)"),
    _col("Comment", ".spec.comment", priority=1),
    _AGE,
]
APPROVAL_POLICY_COLUMNS = [
    _col("Expire-After", ".spec.expireAfterSeconds", "integer", description="Seconds a change may wait"),
    _AGE,
]
APPROVAL_IMMUTABLE = {"rule": "self.spec == oldSelf.spec", "fieldPath": ".spec", "reason": "FieldValueForbidden",
                      "message": api.APPROVAL_IMMUTABLE_MESSAGE}


# --------------------------------------------------------------------------------------------------
# CRDs
# --------------------------------------------------------------------------------------------------

KINDS = {
    # kind: (plural, short name)
    "Artifact": ("artifacts", "kart"),
    "Workload": ("workloads", "kwl"),
    "Deployment": ("deployments", "kdep"),
    "Approval": ("approvals", "kappr"),
    "ApprovalPolicy": ("approvalpolicies", "kpol"),
}


def build_crd(
    kind: str,
    description: str,
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[Schema],
    spec_validations: list[Schema],
    root_validations: list[Schema] | None = None,
) -> Schema:
    plural, short = KINDS[kind]
    spec = model_schema(spec_model)
    if spec_validations:
        spec["x-kubernetes-validations"] = copy.deepcopy(spec_validations)
    status = model_schema(status_model)
    # A new object reads back with observedGeneration 0 < generation until the operator has seen it,
    # so kstatus (Flux) and Argo CD report it in progress rather than current.
    status["default"] = {"observedGeneration": 0}
    schema: Schema = {
        "description": description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object "
                "represents.",
                "type": "string",
            },
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if root_validations:
        # metadata.name is declared so that a rule's fieldPath can point at it, and with
        # generateName (else CEL replaces the declaration with its own) bounded by the limit
        # Kubernetes applies anyway, so that messages quoting the name have a bounded estimated cost.
        schema["properties"]["metadata"] = {
            "type": "object",
            "properties": {
                "name": {"description": "Name of the object.", "type": "string", "maxLength": 253},
                "generateName": {
                    "description": "Prefix of a generated name.",
                    "type": "string",
                    "maxLength": 253,
                },
            },
        }
        schema["x-kubernetes-validations"] = copy.deepcopy(root_validations)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["kiln"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(columns),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def build_crds() -> list[Schema]:
    """The Kiln CRDs (kiln.dev): artifacts, workloads, deployments, approvals and approval policies."""
    return [
        build_crd(
            "Artifact",
            "An Artifact is a container spec: a mutable Draft until it is Registered, then locked and "
            "deployable.",
            api.ArtifactSpec,
            api.ArtifactStatus,
            ARTIFACT_COLUMNS,
            artifact_spec_validations(),
        ),
        build_crd(
            "Workload",
            "A Workload runs an Artifact's containers as pods, for development and testing.",
            api.WorkloadSpec,
            api.WorkloadStatus,
            WORKLOAD_COLUMNS,
            WORKLOAD_SPEC_VALIDATIONS,
            workload_validations(),
        ),
        build_crd(
            "Deployment",
            "A Deployment is a governed, production run of a Registered Artifact (kiln.dev, not apps/v1).",
            api.DeploymentSpec,
            api.DeploymentStatus,
            DEPLOYMENT_COLUMNS,
            DEPLOYMENT_SPEC_VALIDATIONS,
            DEPLOYMENT_VALIDATIONS,
        ),
        build_crd(
            "Approval",
            "An Approval is a reviewer's decision on one change of a governed Deployment; immutable.",
            api.ApprovalSpec,
            api.ApprovalStatus,
            APPROVAL_COLUMNS,
            [],
            [APPROVAL_IMMUTABLE],
        ),
        build_crd(
            "ApprovalPolicy",
            "An ApprovalPolicy (named default) says which changes of the namespace's governed Deployments "
            "wait for approvals, how many, and for how long.",
            api.ApprovalPolicySpec,
            api.ApprovalPolicyStatus,
            APPROVAL_POLICY_COLUMNS,
            [],
        ),
    ]


# --------------------------------------------------------------------------------------------------
# YAML output
# --------------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Safe dumper: multi-line strings (CEL rules) as literal blocks, no anchors/aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(crd: Schema) -> str:
    body = yaml.dump(crd, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    return HEADER + body


def filename(crd: Schema) -> str:
    return f"{crd['metadata']['name']}.yaml"


def write_crds(outdir: Path) -> list[Path]:
    """Write every CRD to ``outdir/<plural>.kiln.dev.yaml``; returns the paths written."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for crd in build_crds():
        path = outdir / filename(crd)
        path.write_text(to_yaml(crd), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(a in ("-h", "--help") for a in args):
        print(f"usage: python -m kiln.api.crds [OUTDIR]   (default: {DEFAULT_OUTDIR})", file=sys.stderr)
        return 2
    outdir = Path(args[0]) if args else DEFAULT_OUTDIR
    for path in write_crds(outdir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
