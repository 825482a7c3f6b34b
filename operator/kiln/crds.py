"""Generate the Kiln CustomResourceDefinitions from the pydantic models in :mod:`kiln.api`.

    python -m kiln.crds [OUTDIR]      # default: the repository's crds/ directory (``make crds``)

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

from kiln import api

DEFAULT_OUTDIR = Path(__file__).resolve().parents[2] / "crds"
HEADER = "# Generated from operator/kiln/api.py by `make crds` (python -m kiln.crds). Do not edit.\n"

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


def _same(expr: str) -> str:
    """CEL: ``expr`` (relative to self/oldSelf, written with ``X``) is unchanged."""
    return f"{expr.replace('X', 'self')} == {expr.replace('X', 'oldSelf')}"


def artifact_locked_rule() -> str:
    """CEL transition rule: once Registered, every locked spec field keeps its old value.

    List equality in Kubernetes CEL ignores the order of ``x-kubernetes-list-type: map`` lists, but
    order matters here (the first container is the primary one, env entries may reference earlier
    ones, and the spec digest is order-sensitive), so the key order of those lists is compared too.
    """
    clauses: list[str] = []
    spec_fields = api.ArtifactSpec.model_fields
    for name in api.ArtifactSpec.locked_fields():
        alias = spec_fields[name].alias or name
        if spec_fields[name].is_required():
            clauses.append(_same(f"X.{alias}"))
        else:
            clauses.append(
                f"has(self.{alias}) == has(oldSelf.{alias}) && "
                f"(!has(self.{alias}) || self.{alias} == oldSelf.{alias})"
            )
    clauses += [
        _same("X.containers.map(c, c.name)"),
        _same("X.containers.map(c, has(c.env) ? c.env.map(e, e.name) : [])"),
        # (containerPort, protocol) pairs in order; no string concatenation, which would blow
        # the estimated cost (enum strings have no maxLength for the cost estimator).
        _same("X.containers.map(c, has(c.ports) ? c.ports.map(p, p.containerPort) : [])"),
        _same("X.containers.map(c, has(c.ports) ? c.ports.map(p, p.protocol) : [])"),
    ]
    body = "\n  && ".join(clauses)
    return f"!({_WAS_REGISTERED})\n|| (\n  {body}\n)\n"


def artifact_spec_validations() -> list[Schema]:
    return [
        {
            "rule": f"!({_WAS_REGISTERED}) || (has(self.lifecycle) && self.lifecycle == 'Registered')",
            "message": api.ARTIFACT_NO_RETURN_MESSAGE,
            "fieldPath": ".lifecycle",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": artifact_locked_rule(),
            "message": api.ARTIFACT_LOCKED_MESSAGE,
            "fieldPath": ".containers",
            "reason": "FieldValueForbidden",
        },
    ]


WORKLOAD_SPEC_VALIDATIONS: list[Schema] = [
    {"rule": "has(self.artifactRef) != has(self.artifact)", "message": api.WORKLOAD_ARTIFACT_MESSAGE},
]
DEPLOYMENT_SPEC_VALIDATIONS: list[Schema] = [
    {"rule": "has(self.artifactRef) || has(self.workloadRef)", "message": api.DEPLOYMENT_REF_MESSAGE},
]


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
    _col("Digest", ".status.artifact.specDigest", priority=1, description="Digest of the spec being run"),
    _AGE,
]
DEPLOYMENT_COLUMNS = [
    _col("Artifact", ".spec.artifactRef.name", description="Registered artifact"),
    _col("Importance", ".spec.importance"),
    _READY,
    _col("Replicas", ".spec.replicas", "integer", description="Desired pods"),
    _col("Ready-Replicas", ".status.readyReplicas", "integer", description="Ready pods"),
    _col("Digest", ".status.artifact.specDigest", priority=1, description="Pinned artifact digest"),
    _AGE,
]


# --------------------------------------------------------------------------------------------------
# CRDs
# --------------------------------------------------------------------------------------------------

KINDS = {
    # kind: (plural, short name)
    "Artifact": ("artifacts", "kart"),
    "Workload": ("workloads", "kwl"),
    "Deployment": ("deployments", "kdep"),
}


def build_crd(
    kind: str,
    description: str,
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[Schema],
    spec_validations: list[Schema],
) -> Schema:
    plural, short = KINDS[kind]
    spec = model_schema(spec_model)
    if spec_validations:
        spec["x-kubernetes-validations"] = copy.deepcopy(spec_validations)
    status = model_schema(status_model)
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
    """The three Kiln CRDs: artifacts, workloads and deployments (kiln.dev)."""
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
        ),
        build_crd(
            "Deployment",
            "A Deployment is a governed, production run of a Registered Artifact (kiln.dev, not apps/v1).",
            api.DeploymentSpec,
            api.DeploymentStatus,
            DEPLOYMENT_COLUMNS,
            DEPLOYMENT_SPEC_VALIDATIONS,
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
        print(f"usage: python -m kiln.crds [OUTDIR]   (default: {DEFAULT_OUTDIR})", file=sys.stderr)
        return 2
    outdir = Path(args[0]) if args else DEFAULT_OUTDIR
    for path in write_crds(outdir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
