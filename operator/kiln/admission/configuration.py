"""The admission webhooks' configuration: which requests reach which handler, and what happens when
the server cannot be reached. One source for `kiln run` (registered by URL) and the Helm chart
(``deploy/generate.py`` writes it into ``charts/kiln/files/webhooks.json``, which the chart's template
fills with the Service, certificate and namespace selector)."""

from __future__ import annotations

from typing import Any

from kiln.api.models import COMPARED_RESOURCES, PORT_NAMES_MESSAGE, REQUESTS_WITHIN_LIMITS
from kiln.names import (
    A_CHANGED_BY,
    A_IMAGES,
    A_REGISTERED_AT,
    A_REGISTERED_BY,
    APPROVAL_POLICIES,
    APPROVALS,
    ARTIFACTS,
    DEPLOYMENTS,
    GROUP,
    L_COLLECTION,
    L_VERSION,
    MANAGED_BY,
    VERB_APPROVE,
    VERB_RECONCILE,
    VERB_REGISTER,
    VERSION,
    WORKLOADS,
)

Body = dict[str, Any]
TIMEOUT_SECONDS = 5
REGISTRATION_TIMEOUT_SECONDS = 15  # registries answer within the resolver's budget (KILN_DIGEST_TIMEOUT)
# handler id -> (resource plural, operations). The ids are the webhook paths: keep them stable.
# The CRD's schema and CEL rules run before any validating webhook and check every create and every
# Draft edit completely: a webhook call there would only add latency. So Workloads have no webhook,
# and an Artifact's is called for what the CRD cannot judge or explain alone (ARTIFACT_MATCH).
WEBHOOKS: dict[str, tuple[str, list[str]]] = {
    "validate-artifact": ("artifacts", ["UPDATE", "DELETE"]),
}
MUTATING_WEBHOOKS: dict[str, tuple[str, list[str]]] = {
    "record-registration": ("artifacts", ["CREATE", "UPDATE"]),
}
# Reading Secrets and ConfigMaps through Kiln's pods: checked for the requesting user (a
# SubjectAccessReview each); fails closed, and only requests that add a reference reach it (REFERENCES).
REFERENCE_CHECKS: dict[str, tuple[str, list[str]]] = {
    "check-artifact-references": ("artifacts", ["CREATE", "UPDATE"]),
    "check-workload-references": ("workloads", ["CREATE", "UPDATE"]),
}
# Governed Deployments fail closed: no change to production goes unchecked or unaudited.
GOVERNANCE_VALIDATING: dict[str, tuple[str, list[str]]] = {
    "validate-deployment": ("deployments", ["CREATE", "UPDATE"]),
    "validate-approval": ("approvals", ["CREATE"]),
    "validate-deployment-deletion": ("deployments", ["DELETE"]),
}
GOVERNANCE_MUTATING: dict[str, tuple[str, list[str]]] = {
    "audit-deployment": ("deployments", ["CREATE", "UPDATE"]),
    "stamp-approval": ("approvals", ["CREATE"]),
}


# Validation looks at spec only: updates that leave the spec alone (the operator's own annotation
# and finalizer writes, label edits) never reach the webhooks, so they can never be blocked by them.
SPEC_CHANGED = [{"name": "spec-changed",
                 "expression": "request.operation != 'UPDATE' || object.spec != oldObject.spec"}]
# An Artifact's deletion (is it in use by a Deployment?) and spec changes of a Registered one (the
# second line behind CEL's locks, naming every locked field changed); Draft edits never call it.
ARTIFACT_MATCH = [{"name": "deletion-or-registered-spec-change",
                   "expression": "request.operation == 'DELETE' || (object.spec != oldObject.spec"
                                 " && has(oldObject.spec.lifecycle) && oldObject.spec.lifecycle == 'Registered')"}]


def _reads(containers: str) -> str:
    return (f"({containers}.exists(c, has(c.envFrom) || (has(c.env) && c.env.exists(e, has(e.valueFrom)))))")


# The operator itself (it may `reconcile` Kiln's objects) creates the Artifact of a Workload's inline
# artifact: the Workload's author was checked.
NOT_THE_OPERATOR = {"name": "not-the-operator", "expression": (
    f"!authorizer.group('{GROUP}').resource(request.resource.resource).namespace(request.namespace)"
    f".check('{VERB_RECONCILE}').allowed()")}
REFERENCES = {
    "check-artifact-references": [SPEC_CHANGED[0], NOT_THE_OPERATOR, {
        "name": "reads-secrets-or-configmaps",
        "expression": (f"has(object.spec.imagePullSecrets) || (has(object.spec.containers)"
                       f" && {_reads('object.spec.containers')})")}],
    "check-workload-references": [SPEC_CHANGED[0], NOT_THE_OPERATOR, {
        "name": "names-an-artifact-or-reads-secrets-or-configmaps",
        "expression": (
            "has(object.spec.artifactRef) ? (oldObject == null || !has(oldObject.spec.artifactRef)"
            " || oldObject.spec.artifactRef.name != object.spec.artifactRef.name)"
            " : (has(object.spec.artifact) && has(object.spec.artifact.containers)"
            f" && {_reads('object.spec.artifact.containers')})")}],
}


def _annotation(obj: str, key: str, of: str = "annotations") -> str:
    return (f"(has({obj}.metadata.{of}) && '{key}' in {obj}.metadata.{of}"
            f" ? {obj}.metadata.{of}['{key}'] : '')")


def _collection(obj: str) -> str:
    return f"(has({obj}.spec.collection) ? {obj}.spec.collection : '')"


def _changed(new: str, old: str) -> str:
    """CEL: a value of the object differs from the old object's ('' when there is no old object)."""
    return f"{new} != (oldObject == null ? '' : {old})"


# The registration recorder is the one webhook that must run (failurePolicy: Fail): it alone knows
# who registered an artifact, its images' digests and its version. These conditions keep it to the
# requests that register an artifact, set its collection or touch what it records (annotations,
# labels), so everything else goes on while the operator is down.
REGISTRATION_MATCH = [
    {"name": "registers-or-touches-registration",
     "expression": (
         "(has(object.spec.lifecycle) && object.spec.lifecycle == 'Registered'"
         " && (oldObject == null || !has(oldObject.spec.lifecycle) || oldObject.spec.lifecycle != 'Registered'))"
         + f" || {_changed(_collection('object'), _collection('oldObject'))}"
         + "".join(f" || {_changed(_annotation('object', k), _annotation('oldObject', k))}"
                   for k in (A_REGISTERED_BY, A_REGISTERED_AT, A_IMAGES))
         + "".join(f" || {_changed(_annotation('object', k, 'labels'), _annotation('oldObject', k, 'labels'))}"
                   for k in (L_COLLECTION, L_VERSION)))},
]
# Auditing a Deployment: spec changes, and any attempt to rewrite the audit record.
AUDIT_MATCH = [
    {"name": "spec-or-audit-record-changed",
     "expression": (SPEC_CHANGED[0]["expression"] + f" || {_annotation('object', A_CHANGED_BY)}"
                    f" != {_annotation('oldObject', A_CHANGED_BY)}")},
]


def _webhooks(hooks: dict[str, tuple[str, list[str]]], client_config: Body,
              conditions: dict[str, list[Body]] | None = None, **extra: Any) -> list[Body]:
    out = []
    for hid, (plural, ops) in hooks.items():
        if conditions is not None:
            extra = {**extra, "matchConditions": conditions[hid]}
        cc = dict(client_config)
        if "url" in cc:
            cc["url"] = cc["url"].rstrip("/") + f"/{hid}"
        else:
            cc["service"] = {**cc["service"], "path": f"/{hid}"}
        out.append({
            "name": f"{hid}.{GROUP}",
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [plural],
                       "operations": ops, "scope": "Namespaced"}],
            "clientConfig": cc,
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1"],
            **extra,
        })
    return out


def webhook_configurations(client_config: Body, name: str) -> tuple[Body, Body]:
    """The Validating- and MutatingWebhookConfiguration, the same for `kiln run` and the Helm chart.

    Validation uses ``failurePolicy: Ignore``: the CRD schemas and CEL rules keep the data safe while
    the operator is down, so an unreachable operator never blocks users' edits. Recording who
    registered an artifact uses ``Fail``, limited by ``matchConditions`` to the requests that need it.
    """
    meta = {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}}
    validating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                  "metadata": meta, "webhooks": _webhooks(WEBHOOKS, client_config, matchConditions=ARTIFACT_MATCH)
                  + _webhooks(GOVERNANCE_VALIDATING, client_config, failurePolicy="Fail",
                              matchConditions=SPEC_CHANGED)
                  + _webhooks(REFERENCE_CHECKS, client_config, REFERENCES, failurePolicy="Fail")}
    mutating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": meta, "webhooks": _webhooks(MUTATING_WEBHOOKS, client_config, failurePolicy="Fail",
                                                        matchConditions=REGISTRATION_MATCH,
                                                        reinvocationPolicy="Never",
                                                        # It takes a version number, except on a dry run,
                                                        # and asks registries for digests.
                                                        sideEffects="NoneOnDryRun",
                                                        timeoutSeconds=REGISTRATION_TIMEOUT_SECONDS)
                + _webhooks(GOVERNANCE_MUTATING, client_config, failurePolicy="Fail", matchConditions=AUDIT_MATCH,
                            reinvocationPolicy="Never")}
    return validating, mutating


def chart_policies() -> list[Body]:
    """The admission policies as the Helm chart takes them (``charts/kiln/files/policies.json``): the
    template names them after the release."""
    out = []
    for obj in policies(""):
        suffix = obj["metadata"]["name"].removeprefix("-")
        spec = {k: v for k, v in obj["spec"].items() if k != "policyName"}
        out.append({"kind": obj["kind"], "suffix": suffix, "spec": spec})
    return out


def chart_webhooks() -> dict[str, list[Body]]:
    """The webhooks as the Helm chart takes them (``charts/kiln/files/webhooks.json``): each with its
    path instead of a clientConfig, which the chart's template makes (Service, CA, namespace selector)."""
    validating, mutating = webhook_configurations({"service": {"name": "", "namespace": ""}}, "")
    out: dict[str, list[Body]] = {}
    for kind, cfg in (("validating", validating), ("mutating", mutating)):
        out[kind] = [{**{k: v for k, v in hook.items() if k != "clientConfig"},
                      "path": hook["clientConfig"]["service"]["path"]} for hook in cfg["webhooks"]]
    return out


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _policy(name: str, operations: list[str], resources: list[str], validations: list[Body],
            **spec: Any) -> tuple[Body, Body]:
    """A ValidatingAdmissionPolicy on Kiln's kinds (failing closed) and its binding (Deny), both ``name``."""
    meta = {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": meta,
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": [GROUP], "apiVersions": ["*"], "operations": operations, "resources": resources}]},
            **spec, "validations": validations}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": meta, "spec": {"policyName": name, "validationActions": ["Deny"]}}
    return policy, binding


def spec_policy(name: str) -> tuple[Body, Body]:
    """A ValidatingAdmissionPolicy for what the Pod or Service API would refuse but a CRD rule cannot
    afford to check (its estimated cost is over the CRD's budget): one port name for two ports (the
    Service's ports take the names), a container's requests above its limits; in an Artifact or a
    Workload's inline artifact."""
    keys = "[" + ", ".join(f"'{k}'" for k in COMPARED_RESOURCES) + "]"
    within = (f"!has(c.resources) || !has(c.resources.requests) || !has(c.resources.limits) || {keys}.all(k, "
              "!(k in c.resources.requests) || !(k in c.resources.limits) || quantity(string(c.resources.requests[k]))"
              ".compareTo(quantity(string(c.resources.limits[k]))) <= 0)")
    return _policy(name, ["CREATE", "UPDATE"], [ARTIFACTS, WORKLOADS], variables=[{"name": "containers", "expression": (
        "has(object.spec.containers) ? object.spec.containers : "
        "(has(object.spec.artifact) && has(object.spec.artifact.containers) ? object.spec.artifact.containers"
        " : [])")}], validations=[{
            "expression": (
                "variables.containers.all(c, !has(c.ports) || c.ports.all(p, !has(p.name) || "
                "variables.containers.all(d, !has(d.ports) || d.ports.all(q, !has(q.name) || "
                "q.name != p.name || (q.containerPort == p.containerPort && q.protocol == p.protocol)))))"),
            "messageExpression": ("'spec' + (has(object.spec.containers) ? '' : '.artifact') + '.' + "
                                  + _cel_string(PORT_NAMES_MESSAGE)),
            "reason": "Invalid"}, {
            "expression": f"variables.containers.all(c, {within})",
            "messageExpression": (
                "'spec' + (has(object.spec.containers) ? '' : '.artifact') + '.containers[' + "
                f"string(variables.containers.map(c, !({within})).indexOf(true)) + '].resources: "
                f"{REQUESTS_WITHIN_LIMITS}'"),
            "reason": "Invalid"}])


def policies(prefix: str) -> list[Body]:
    """Every ValidatingAdmissionPolicy Kiln ships, with its binding, named ``<prefix>-status`` and
    ``<prefix>-specs``."""
    return [*status_policy(f"{prefix}-status"), *spec_policy(f"{prefix}-specs"),
            *orphan_policy(f"{prefix}-no-orphans")]


def orphan_policy(name: str) -> tuple[Body, Body]:
    """A ValidatingAdmissionPolicy: a governed Deployment is never deleted leaving production running
    without it (``kubectl delete --cascade=orphan``, or the ``orphan`` finalizer), which would leave the
    apps/v1 Deployment unowned and its audit trail gone. Scale it to zero or delete it with its children."""
    why = ("would leave its apps/v1 Deployment running in production without its governance and audit trail; "
           "delete it with its children (--cascade=background or foreground) or scale it to 0 first")
    return _policy(name, ["CREATE", "UPDATE", "DELETE"], [DEPLOYMENTS], [{
        "expression": ("request.operation != 'DELETE' || !has(request.options) || "
                       "((!has(request.options.propagationPolicy) || request.options.propagationPolicy "
                       "!= 'Orphan') && (!has(request.options.orphanDependents) || "
                       "!request.options.orphanDependents))"),
        "messageExpression": f"'deleting Deployment ' + request.name + ' with orphaned children {why}'",
        "reason": "Forbidden"}, {
        "expression": ("request.operation == 'DELETE' || !has(object.metadata.finalizers) || "
                       "!('orphan' in object.metadata.finalizers)"),
        "messageExpression": (f"'metadata.finalizers: the orphan finalizer on Deployment ' + request.name"
                              f" + ' {why}'"),
        "reason": "Forbidden"}])


def status_policy(name: str) -> tuple[Body, Body]:
    """A ValidatingAdmissionPolicy and its binding: the status of Kiln's objects (what the operator
    observed, who registered an artifact, a Deployment's audit trail and pinned digest) is written only
    by whoever may ``reconcile`` them, a verb of Kiln's own that the operator's role grants. A role that
    lets users write ``*/status`` with the usual verbs does not let them forge it. It holds while the
    operator is down, and for every client (the API server evaluates it)."""
    resource = "request.resource.resource + '.' + request.resource.group"
    return _policy(name, ["UPDATE"], [f"{plural}/status" for plural in (ARTIFACTS, WORKLOADS, DEPLOYMENTS)], [{
        "expression": (f"authorizer.group('{GROUP}').resource(request.resource.resource)"
                       f".namespace(request.namespace).name(request.name).check('{VERB_RECONCILE}')"
                       ".allowed()"),
        "messageExpression": (f"'the status of ' + {resource} + ' ' + request.name + ' is written by the "
                              f"Kiln operator only: it needs the verb {VERB_RECONCILE} on ' + {resource}"),
        "reason": "Forbidden"}])


# --- the personas' roles ----------------------------------------------------------------------------

READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete"]
KINDS = [ARTIFACTS, WORKLOADS, DEPLOYMENTS, APPROVALS, APPROVAL_POLICIES]
# persona -> (what it may do, the default role it aggregates into, what it is for)
PERSONAS: dict[str, tuple[list[Body], str | None, str]] = {
    "viewer": ([{"resources": KINDS, "verbs": READ}], "view",
               "reads Artifacts, Workloads, governed Deployments, Approvals and approval policies"),
    "developer": ([{"resources": [ARTIFACTS, WORKLOADS], "verbs": WRITE}], "edit",
                  "iterates: Draft Artifacts and Workloads (registering needs the registrar)"),
    "registrar": ([{"resources": [ARTIFACTS], "verbs": ["update", "patch", VERB_REGISTER]}], "admin",
                  "registers Artifacts (the verb register)"),
    "deployer": ([{"resources": [DEPLOYMENTS], "verbs": WRITE}], "edit",
                 "creates and changes governed Deployments (their changes wait for approvals as the policy says)"),
    "approver": ([{"resources": [DEPLOYMENTS], "verbs": [VERB_APPROVE]},
                  {"resources": [APPROVALS], "verbs": ["create"]}], "admin",
                 "approves or rejects changes of governed Deployments (the verb approve), by Approvals"),
}


def roles(prefix: str) -> list[Body]:
    """The personas' ClusterRoles (``<prefix>-<persona>``), each reading every Kiln kind, to bind per
    namespace; labelled to aggregate into Kubernetes' view, edit and admin roles where they belong
    (docs/governance.md)."""
    out = []
    for persona, (rules, aggregate, purpose) in PERSONAS.items():
        labels = {"app.kubernetes.io/managed-by": MANAGED_BY, "kiln.dev/persona": persona}
        if aggregate:
            labels[f"rbac.authorization.k8s.io/aggregate-to-{aggregate}"] = "true"
        out.append({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"{prefix}-{persona}", "labels": labels,
                         "annotations": {"kiln.dev/description": f"Kiln {persona}: {purpose}"}},
            "rules": [{"apiGroups": [GROUP], "resources": KINDS, "verbs": READ},
                      *({"apiGroups": [GROUP], **rule} for rule in rules if rule["verbs"] != READ)]})
    return out
