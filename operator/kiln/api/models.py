"""The Kiln resource model (``kiln.dev/v1alpha1``): pydantic v2 models for the spec and status of
``Artifact``, ``Workload`` and ``Deployment``.

These models are the single source of the CRD schemas (see :mod:`kiln.api.crds`, which turns their
JSON schema into structural OpenAPI v3 schemas) and of the operator's view of the objects: parse a
body with ``ArtifactSpec.model_validate(body["spec"])``. Attribute names are snake_case, the wire
names are camelCase aliases; both are accepted on input, unknown fields are ignored (the API server
prunes them anyway). Serialise with ``model_dump(mode="json", by_alias=True, exclude_none=True)``.

Field ``description``\\ s end up in the CRD, so ``kubectl explain artifacts.kiln.dev.spec`` shows
them: keep them short and written for users.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake

from kiln.names import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "GROUP", "VERSION"]  # re-exported for the CRD generator

# --------------------------------------------------------------------------------------------------
# Messages shared by the CRD CEL rules and the models
# --------------------------------------------------------------------------------------------------

ARTIFACT_NO_RETURN_MESSAGE = (
    "spec.lifecycle: the Artifact is Registered and cannot return to Draft; "
    "create a new Artifact to iterate on"
)
# Once an Artifact is Registered, one CEL rule per locked field (or group of fields) rejects a
# change with the field's path in place of {field} (e.g. spec.containers[0].image; the messageExpression
# names the changed containers by index, the static message says spec.containers[].image).
ARTIFACT_LOCKED_MESSAGE = "{field} is locked: the Artifact is Registered; create a new Artifact to change it"
ARTIFACT_LOCKED_MESSAGE_MANY = (
    "{fields} are locked: the Artifact is Registered; create a new Artifact to change them"
)
# Containers added, removed, renamed or reordered (the messageExpression appends the old and new names).
ARTIFACT_CONTAINERS_LOCKED_MESSAGE = (
    "spec.containers is locked: the Artifact is Registered; "
    "create a new Artifact to add, remove, rename or reorder containers"
)
WORKLOAD_ARTIFACT_MESSAGE = "spec: set exactly one of artifactRef or artifact"
# The inline artifact is a creation shortcut (the messageExpression names the Artifact).
WORKLOAD_INLINE_ARTIFACT_MESSAGE = (
    "spec.artifact is a creation shortcut and cannot change: "
    "edit the Artifact named after this Workload instead"
)
DEPLOYMENT_REF_MESSAGE = "spec: set artifactRef or workloadRef"
ARTIFACT_REF_MESSAGE = "spec.artifactRef: set name, or collection and version (not both)"


def register_command(artifact: str) -> str:
    """What a user types to register an Artifact (messages that ask for it say it)."""
    return f"kubectl patch artifact.kiln.dev {artifact} --type merge -p '{{\"spec\":{{\"lifecycle\":\"Registered\"}}}}'"
# Workload and Deployment names become label values (kiln.dev/workload, kiln.dev/deployment) and the
# names of their Services (<workload>-dev, <deployment>): DNS labels, short enough, never the same.
DNS_1035_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
DEV_SERVICE_SUFFIX = "-dev"
MAX_WORKLOAD_NAME_LENGTH = 63 - len(DEV_SERVICE_SUFFIX)
MAX_DEPLOYMENT_NAME_LENGTH = 63
WORKLOAD_NAME_MESSAGE = (
    f"metadata.name must be a DNS label of at most {MAX_WORKLOAD_NAME_LENGTH} characters: lowercase letters, "
    f"digits and '-', starting with a letter (the Workload's Service is <name>{DEV_SERVICE_SUFFIX})"
)
DEPLOYMENT_NAME_MESSAGE = (
    f"metadata.name must be a DNS label of at most {MAX_DEPLOYMENT_NAME_LENGTH} characters: lowercase letters, "
    f"digits and '-', starting with a letter, and not ending in {DEV_SERVICE_SUFFIX} (the names of Workloads' "
    "development Services): the Deployment's Service takes it"
)

# --------------------------------------------------------------------------------------------------
# Shared building blocks
# --------------------------------------------------------------------------------------------------

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# An IANA service name as Kubernetes accepts it for a port name (at most 15 characters).
PORT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# resource.Quantity, as kubebuilder renders it for string values, without a sign: no negative amounts.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A port number or a port name.
PORT_PATTERN = r"^([0-9]{1,5}|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"
# An integer or a percentage, as in a PodDisruptionBudget.
INT_OR_PERCENT_PATTERN = r"^[0-9]+%?$"

MAX_CONTAINERS = 16
MAX_ENV = 256
MAX_PORTS = 64
MAX_ARGS = 256
MAX_CONDITIONS = 16
MAX_HISTORY = 50
MAX_REPLICAS = 100
MAX_PULL_SECRETS = 8

Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
Uid = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Arg = Annotated[str, StringConstraints(max_length=32768)]
DateTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


def _int_or_string(pattern: str) -> WithJsonSchema:
    """Schema of an ``int | str`` field: ``x-kubernetes-int-or-string`` (the string form must match)."""
    return WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": pattern})


# Integer-or-string types (written out for type checkers: aliases cannot come from a function call).
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)],
    _int_or_string(QUANTITY_PATTERN),
]
PortOrName = Annotated[
    int | Annotated[str, StringConstraints(pattern=PORT_PATTERN, max_length=64)],
    _int_or_string(PORT_PATTERN),
]
IntOrPercent = Annotated[
    int | Annotated[str, StringConstraints(pattern=INT_OR_PERCENT_PATTERN, max_length=64)],
    _int_or_string(INT_OR_PERCENT_PATTERN),
]


def _list_map(*keys: str) -> dict[str, Any]:
    """Schema extension: a list of objects keyed by ``keys`` (duplicates rejected by the API server)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def _keyed(*keys: str, **field: Any) -> Any:
    """A Field of a list keyed like a Kubernetes list-map (the API server rejects duplicate keys)."""
    return Field(json_schema_extra=_list_map(*keys), **field)


# The resources whose requests are compared with their limits at admission (a CEL rule's cost must be
# bounded; the API server checks the others when the pod is made, and the owner's condition says so).
COMPARED_RESOURCES = ("cpu", "memory", "ephemeral-storage")


REQUESTS_WITHIN_LIMITS = f"requests may not exceed limits ({', '.join(COMPARED_RESOURCES)})"
# The Service's ports are named after the containers' ports: one name, one port.
PORT_NAMES_MESSAGE = "containers[].ports: a port name may name one port only (the Service's ports take the names)"


def _port_names_unique(containers: list[Any]) -> bool:
    seen: dict[str, tuple[int, str]] = {}
    for c in containers:
        for p in c.ports or []:
            if p.name is not None and seen.setdefault(p.name, (p.container_port, p.protocol)) != (p.container_port,
                                                                                                   p.protocol):
                return False
    return True



def _requests_within_limits(requests: dict[str, Any] | None, limits: dict[str, Any] | None) -> bool:
    from kubernetes import utils

    parse: Any = utils.parse_quantity  # untyped
    req, lim = requests or {}, limits or {}
    return all(k not in req or k not in lim or parse(req[k]) <= parse(lim[k]) for k in COMPARED_RESOURCES)


def _unique(what: str, keys: list[Any]) -> None:
    """Mirror of the API server's list-map check: keys must be unique."""
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"duplicate {what}: {key}")
        seen.add(key)


class Rule(NamedTuple):
    """A rule on a model's object, once in CEL (the CRD's ``x-kubernetes-validations``: the API server
    refuses what breaks it) and once in Python (the operator and the webhook, on parsed objects)."""

    cel: str  # on the object, as ``self`` ("": checked by an admission policy instead)
    message: str
    holds: Callable[[Any], bool]


def _rules_into_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    rules = [r for r in getattr(model, "RULES", ()) if r.cel]
    if rules:
        schema["x-kubernetes-validations"] = [{"rule": r.cel, "message": r.message} for r in rules]


class KilnModel(BaseModel):
    """Base model: camelCase wire names, snake_case attributes, unknown fields ignored; ``RULES``
    checked on parsing and published in the CRD."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        json_schema_extra=_rules_into_schema,
    )
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in self.RULES:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The object as the API server would store it (camelCase, unset optional fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def problems(e: ValidationError, prefix: str = "spec") -> str:
    """A validation error as one line naming each field: ``spec.containers.0.image: Field required``."""
    return "; ".join(f"{'.'.join([prefix, *map(str, err['loc'])])}: {err['msg']}" if err["loc"] else err["msg"]
                     for err in e.errors())


# --------------------------------------------------------------------------------------------------
# Container (the Kubernetes container fields users paste; no securityContext, by design)
# --------------------------------------------------------------------------------------------------


class SecretKeySelector(KilnModel):
    """Selects a key of a Secret in the artifact's namespace."""

    name: Name = Field(description="Name of the Secret.")
    key: Name = Field(description="The key of the Secret to select.")
    optional: bool | None = Field(None, description="Whether the Secret or its key may be missing.")


class ConfigMapKeySelector(KilnModel):
    """Selects a key of a ConfigMap in the artifact's namespace."""

    name: Name = Field(description="Name of the ConfigMap.")
    key: Name = Field(description="The key of the ConfigMap to select.")
    optional: bool | None = Field(None, description="Whether the ConfigMap or its key may be missing.")


class ObjectFieldSelector(KilnModel):
    """Selects a field of the pod (downward API)."""

    field_path: ShortText = Field(description="Path of the field to select, e.g. metadata.name.")
    api_version: ShortText | None = Field(None, description="Version of the schema of fieldPath (v1).")


class ResourceFieldSelector(KilnModel):
    """Selects a resource request or limit of a container (downward API)."""

    resource: Name = Field(description="The resource to select, e.g. limits.memory.")
    container_name: Name | None = Field(None, description="Container name; defaults to this container.")
    divisor: Quantity | None = Field(None, description="Output format of the exposed resources (1).")


class EnvVarSource(KilnModel):
    """Source of an environment variable's value (exactly one)."""

    RULES: ClassVar = (Rule(
        "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), has(self.resourceFieldRef)]"
        ".filter(x, x).size() == 1",
        "valueFrom: set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
        lambda m: [m.secret_key_ref, m.config_map_key_ref, m.field_ref, m.resource_field_ref].count(None) == 3),)

    secret_key_ref: SecretKeySelector | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: ConfigMapKeySelector | None = Field(None, description="A key of a ConfigMap.")
    field_ref: ObjectFieldSelector | None = Field(None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        None, description="A resource request or limit of a container."
    )


class EnvVar(KilnModel):
    """An environment variable of the container."""

    RULES: ClassVar = (Rule("!has(self.value) || !has(self.valueFrom)", "value and valueFrom may not both be set",
                            lambda m: m.value is None or m.value_from is None),)

    name: Name = Field(description="Name of the environment variable (unique within the container).")
    value: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        None, description="Value; $(VAR) references to previously defined variables are expanded."
    )
    value_from: EnvVarSource | None = Field(None, description="Source of the value; not with value.")


class LocalObjectReference(KilnModel):
    """A reference to an object in the same namespace."""

    name: Name = Field(description="Name of the object.")
    optional: bool | None = Field(None, description="Whether the object may be missing.")


class SecretReference(KilnModel):
    """A Secret in the same namespace."""

    name: Name = Field(description="Name of the Secret.")


class EnvFromSource(KilnModel):
    """A source of a set of environment variables (all keys of a ConfigMap or Secret)."""

    prefix: ShortText | None = Field(None, description="Prefix prepended to every key.")
    config_map_ref: LocalObjectReference | None = Field(None, description="The ConfigMap to select from.")
    secret_ref: LocalObjectReference | None = Field(None, description="The Secret to select from.")


class ContainerPort(KilnModel):
    """A network port the container listens on."""

    RULES: ClassVar = (Rule("!has(self.name) || self.name.matches('[a-z]')",
                            "name must contain a letter (a service name, not a number)",
                            lambda m: m.name is None or any(c.isalpha() for c in m.name)),)

    name: Annotated[str, StringConstraints(max_length=15, pattern=PORT_NAME_PATTERN)] | None = Field(
        None, description="Port name (IANA service name, at most 15 characters); used by the Service."
    )
    container_port: int = Field(ge=1, le=65535, description="Port number on the pod's IP address.")
    protocol: Literal["TCP", "UDP", "SCTP"] = Field("TCP", description="Protocol: TCP (default), UDP or SCTP.")


class ResourceRequirements(KilnModel):
    """Compute resources of the container."""

    # Too costly for the CRD's rule budget (its keys are open): the spec policy checks it at admission
    # (kiln.admission.configuration.spec_policy), with the same message.
    RULES: ClassVar = (Rule("", REQUESTS_WITHIN_LIMITS, lambda m: _requests_within_limits(m.requests, m.limits)),)

    requests: dict[str, Quantity] | None = Field(
        None,
        max_length=32,
        description="Minimum resources required, e.g. cpu: 500m, memory: 1Gi.",
    )
    limits: dict[str, Quantity] | None = Field(
        None,
        max_length=32,
        description="Maximum resources allowed, e.g. memory: 2Gi, nvidia.com/gpu: 1.",
    )


class HTTPHeader(KilnModel):
    """A custom HTTP header."""

    name: Name = Field(description="Header field name.")
    value: ShortText = Field(description="Header field value.")


_NO_HOST = Rule("!has(self.host)", "host is not allowed: a probe checks its own pod, at the pod's address",
                lambda m: m.host is None)


class HTTPGetAction(KilnModel):
    """Probe by an HTTP GET request; success is a status code from 200 to 399."""

    RULES: ClassVar = (_NO_HOST, Rule(
        "!has(self.httpHeaders) || self.httpHeaders.all(h, h.name.lowerAscii() != 'host')",
        "httpHeaders: a Host header is not allowed",
        lambda m: all(h.name.lower() != "host" for h in m.http_headers or [])))

    path: ShortText | None = Field(None, description="Path to request, e.g. /healthz.")
    port: PortOrName = Field(description="Port number or name to request.")
    host: Name | None = Field(None, description="Host name to connect to; defaults to the pod IP.")
    scheme: Literal["HTTP", "HTTPS"] | None = Field(None, description="HTTP (default) or HTTPS.")
    http_headers: list[HTTPHeader] | None = Field(
        None, max_length=32, description="Custom headers to set in the request."
    )


class TCPSocketAction(KilnModel):
    """Probe by opening a TCP connection."""

    RULES: ClassVar = (_NO_HOST,)

    port: PortOrName = Field(description="Port number or name to connect to.")
    host: Name | None = Field(None, description="Host name to connect to; defaults to the pod IP.")


class ExecAction(KilnModel):
    """Probe by running a command in the container; success is exit status 0."""

    command: list[Arg] | None = Field(
        None, max_length=MAX_ARGS, description="Command line to run (not in a shell)."
    )


class GRPCAction(KilnModel):
    """Probe by the gRPC health checking protocol."""

    port: int = Field(ge=1, le=65535, description="Port number of the gRPC service.")
    service: ShortText | None = Field(None, description="Service name passed in the HealthCheckRequest.")


class Probe(KilnModel):
    """A health check of the container; set exactly one of httpGet, tcpSocket, exec or grpc."""

    RULES: ClassVar = (Rule(
        "[has(self.httpGet), has(self.tcpSocket), has(self.exec), has(self.grpc)].filter(x, x).size() == 1",
        "set exactly one of httpGet, tcpSocket, exec, grpc",
        lambda m: [m.http_get, m.tcp_socket, m.exec, m.grpc].count(None) == 3),)

    http_get: HTTPGetAction | None = Field(None, description="Probe by an HTTP GET request.")
    tcp_socket: TCPSocketAction | None = Field(None, description="Probe by opening a TCP connection.")
    exec: ExecAction | None = Field(None, description="Probe by running a command in the container.")
    grpc: GRPCAction | None = Field(None, description="Probe by the gRPC health checking protocol.")
    initial_delay_seconds: int | None = Field(
        None, ge=0, description="Seconds after the container started before the first probe."
    )
    period_seconds: int | None = Field(None, ge=1, description="Seconds between probes (10).")
    timeout_seconds: int | None = Field(None, ge=1, description="Seconds after which a probe times out (1).")
    success_threshold: int | None = Field(
        None, ge=1, description="Consecutive successes to count as healthy after a failure (1)."
    )
    failure_threshold: int | None = Field(
        None, ge=1, description="Consecutive failures to count as unhealthy (3)."
    )
    termination_grace_period_seconds: int | None = Field(
        None, ge=1, description="Grace period for the pod when this probe fails (liveness, startup)."
    )


def _single_success(probe: str) -> Rule:
    """Kubernetes' rule for liveness and startup probes: one success is success."""
    return Rule(f"!has(self.{probe}) || !has(self.{probe}.successThreshold) || self.{probe}.successThreshold == 1",
                f"{probe}.successThreshold must be 1",
                lambda m: (p := getattr(m, to_snake(probe))) is None or p.success_threshold in (None, 1))


class Container(KilnModel):
    """A container, with the Kubernetes container fields (securityContext is set by Kiln, not here)."""

    RULES: ClassVar = (_single_success("livenessProbe"), _single_success("startupProbe"))

    name: Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL_PATTERN)] = Field(
        description="Container name (DNS label, unique within the artifact)."
    )
    image: Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^\S+$")] = Field(
        description="Container image reference, e.g. registry.example.com/app:1.2 or an @sha256 digest."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Always, IfNotPresent or Never; Kubernetes' default depends on the tag."
    )
    command: list[Arg] | None = Field(
        None, max_length=MAX_ARGS, description="Entrypoint; replaces the image's ENTRYPOINT."
    )
    args: list[Arg] | None = Field(
        None, max_length=MAX_ARGS, description="Arguments to the entrypoint; replace the image's CMD."
    )
    working_dir: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        None, description="Working directory; defaults to the image's."
    )
    env: list[EnvVar] | None = Field(
        None,
        max_length=MAX_ENV,
        description="Environment variables, in order (later ones may reference earlier ones).",
        json_schema_extra=_list_map("name"),
    )
    env_from: list[EnvFromSource] | None = Field(
        None, max_length=32, description="Sources of sets of environment variables."
    )
    ports: list[ContainerPort] | None = Field(
        None,
        max_length=MAX_PORTS,
        description="Ports the container listens on; the operator exposes them with a Service.",
        json_schema_extra=_list_map("containerPort", "protocol"),
    )
    resources: ResourceRequirements | None = Field(None, description="Compute resources.")
    readiness_probe: Probe | None = Field(
        None, description="Whether the container is ready to receive traffic."
    )
    liveness_probe: Probe | None = Field(
        None, description="Whether the container is alive; it is restarted when not."
    )
    startup_probe: Probe | None = Field(
        None, description="Whether the container has started; other probes wait for it."
    )

    @model_validator(mode="after")
    def _unique_keys(self) -> Self:
        _unique("env name", [e.name for e in self.env or []])
        _unique(
            "port (containerPort, protocol)",
            [(p.container_port, str(p.protocol)) for p in self.ports or []],
        )
        return self


def _unique_container_names(containers: list[Container]) -> list[Container]:
    _unique("container name", [c.name for c in containers])
    return containers


Containers = Annotated[list[Container], AfterValidator(_unique_container_names), _keyed(
    "name", min_length=1, max_length=MAX_CONTAINERS,
    description="Containers of the artifact: the first is the primary one, the others are sidecars.")]
DisplayName = Annotated[
    Annotated[str, StringConstraints(max_length=253)] | None,
    Field(description="Human-friendly name; editable at any time."),
]
Description = Annotated[
    Annotated[str, StringConstraints(max_length=4096)] | None,
    Field(description="Free-text description; editable at any time."),
]


# --------------------------------------------------------------------------------------------------
# Status building blocks
# --------------------------------------------------------------------------------------------------


class ConditionType(StrEnum):
    """The conditions Kiln reports: Ready (the object is what its spec asks), Available (it serves),
    Progressing (it is getting there). The type field stays open to others."""

    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    APPROVED = "Approved"  # a governed Deployment: the change it runs was approved as its policy asks
    UPDATE_AVAILABLE = "UpdateAvailable"  # a Manual Workload: its Artifact changed, its pods wait for a restart


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KilnModel):
    """An observation of one aspect of the object's state (Kubernetes condition conventions)."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316)] = Field(
        description="Condition type in CamelCase, e.g. Ready."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: ShortText | None = Field(None, description="Machine-readable reason in CamelCase.")
    message: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        None, description="Human-readable details."
    )
    last_transition_time: DateTime | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was computed from."
    )


Conditions = Annotated[list[Condition] | None, _keyed(
    "type", max_length=MAX_CONDITIONS, description="Current conditions; Ready is always present once observed.")]
ObservedGeneration = Annotated[
    Annotated[int, Field(ge=0)] | None,
    Field(description="metadata.generation last acted upon by the operator."),
]


class ArtifactReference(KilnModel):
    """A reference to an Artifact in the same namespace."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Name of the Artifact."
    )
    uid: Uid | None = Field(
        None,
        description="Run only the Artifact object with this uid. A governed Deployment pins the object it "
        "promoted; when the name is reused by another object (deleted and recreated), naming the new "
        "object's uid here promotes it.",
    )


CollectionName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]


class VersionedArtifactReference(KilnModel):
    """A governed Deployment's Artifact (same namespace): by name, or by collection and version."""

    RULES: ClassVar = (Rule("has(self.name) != (has(self.collection) && has(self.version))", ARTIFACT_REF_MESSAGE,
                            lambda m: (m.name is not None) != (m.collection is not None and m.version is not None)),)
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        None, description="Name of the Artifact; or give collection and version."
    )
    collection: CollectionName | None = Field(None, description="The Artifact's collection (spec.collection).")
    version: int | None = Field(None, ge=1, description="The version of the collection (status.version).")
    uid: Uid | None = Field(
        None,
        description="Run only the Artifact object with this uid. A governed Deployment pins the object it "
        "promoted; when the name is reused by another object (deleted and recreated), naming the new "
        "object's uid here promotes it.",
    )

    def describe(self) -> str:
        return f"Artifact {self.name}" if self.name else f"version {self.version} of collection {self.collection}"


class WorkloadReference(KilnModel):
    """A reference to a Workload in the same namespace."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Name of the Workload."
    )


# --------------------------------------------------------------------------------------------------
# Artifact
# --------------------------------------------------------------------------------------------------

# Spec fields that stay editable once an Artifact is Registered; every other field is locked
# (and covered by the spec digest).
ARTIFACT_UNLOCKED_FIELDS: frozenset[str] = frozenset({"display_name", "description", "lifecycle"})


class Lifecycle(StrEnum):
    """An Artifact's lifecycle: Draft (editable), then Registered (locked), never back."""

    DRAFT = "Draft"
    REGISTERED = "Registered"


# Checked at admission by the spec policy (kiln.admission.configuration.spec_policy), in Python here.
UNIQUE_PORT_NAMES = Rule("", PORT_NAMES_MESSAGE, lambda m: _port_names_unique(m.containers))


class ArtifactSpec(KilnModel):
    """Desired state of an Artifact: a container spec, a mutable Draft until Registered."""

    RULES: ClassVar = (UNIQUE_PORT_NAMES,)
    display_name: DisplayName = None
    description: Description = None
    lifecycle: Lifecycle = Field(
        Lifecycle.DRAFT,
        description="Draft (default; everything editable) or Registered (containers locked). "
        "Draft -> Registered only, never back.",
    )
    collection: CollectionName | None = Field(
        None,
        description="The collection this Artifact is a version of (a DNS label, e.g. scorer): registering "
        "gives it the collection's next version number (status.version, label kiln.dev/version). Locked once "
        "Registered.",
    )
    containers: Containers
    image_pull_secrets: Annotated[list[SecretReference] | None, _keyed(
        "name", max_length=MAX_PULL_SECRETS, description=(
            "Secrets (kubernetes.io/dockerconfigjson) with credentials for the images' registries: the pods "
            "pull with them, and registration reads them to resolve the images' digests."))] = None

    UNLOCKED_FIELDS: ClassVar[frozenset[str]] = ARTIFACT_UNLOCKED_FIELDS

    @classmethod
    def locked_fields(cls) -> list[str]:
        """Python names of the spec fields locked once the Artifact is Registered, in field order."""
        return [name for name in cls.model_fields if name not in cls.UNLOCKED_FIELDS]

    @classmethod
    def locked_aliases(cls) -> list[str]:
        """Wire (camelCase) names of the locked spec fields, in field order."""
        return [cls.model_fields[name].alias or name for name in cls.locked_fields()]

    @property
    def registered(self) -> bool:
        return self.lifecycle == Lifecycle.REGISTERED

    @property
    def primary_container(self) -> Container:
        return self.containers[0]


class ImageStatus(KilnModel):
    """A container's image, resolved at registration."""

    container: Annotated[str, StringConstraints(max_length=63)] = Field(description="The container's name.")
    image: Annotated[str, StringConstraints(max_length=1024)] = Field(description="The image as the spec names it.")
    digest: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="sha256: digest of its manifest in the registry at registration; none when the tag is "
        "kept (a registry Kiln does not resolve, or allowed by the operator's policy).")
    message: ShortText | None = Field(None, description="Why the tag is kept, when it is.")

    @property
    def pinned(self) -> str:
        """The image production runs: by digest when there is one."""
        if not self.digest:
            return self.image
        from kiln.registry import parse

        return parse(self.image).pinned(self.digest)


class ArtifactStatus(KilnModel):
    """Observed state of an Artifact."""

    observed_generation: ObservedGeneration = None
    conditions: Conditions = None
    lifecycle: Lifecycle | None = Field(None, description="Lifecycle last observed by the operator.")
    spec_digest: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="sha256: digest of the canonical JSON of the locked part of the spec."
    )
    registered_at: DateTime | None = Field(None, description="When the Artifact was registered.")
    registered_by: ShortText | None = Field(
        None, description="The user who registered the Artifact (from the admission request)."
    )
    collection: CollectionName | None = Field(None, description="Its collection, once Registered.")
    version: int | None = Field(
        None, ge=1, description="Its version in the collection, given at registration: 1, 2, 3 ... in the "
        "namespace, never reused.")
    images: Annotated[list[ImageStatus] | None, _keyed("container", max_length=MAX_CONTAINERS, description=(
        "Each container's image as resolved at registration: what governed Deployments run."))] = None


# --------------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------------


class InlineArtifact(KilnModel):
    """An artifact given inline: at creation Kiln creates a Draft Artifact named after the Workload."""

    RULES: ClassVar = (UNIQUE_PORT_NAMES,)
    display_name: DisplayName = None
    description: Description = None
    containers: Containers


class DesiredState(StrEnum):
    """What a user asks of a Workload: pods running, or none."""

    RUNNING = "Running"
    STOPPED = "Stopped"


class UpdatePolicy(StrEnum):
    """When a Workload's pods move onto a changed Draft Artifact."""

    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class WorkloadSpec(KilnModel):
    """Desired state of a Workload: a development run of an Artifact's containers."""

    artifact_ref: ArtifactReference | None = Field(
        None, description="The Artifact to run (same namespace); set this or artifact."
    )
    artifact: InlineArtifact | None = Field(
        None,
        description="An inline artifact, a creation shortcut: Kiln creates a Draft Artifact named after "
        "the Workload and runs it; edit that Artifact afterwards.",
    )
    replicas: int = Field(1, ge=0, le=MAX_REPLICAS, description="Number of pods to run.")
    state: DesiredState = Field(
        DesiredState.RUNNING,
        description="Running (default) or Stopped: Stopped removes the pods and keeps the Workload.",
    )
    update_policy: UpdatePolicy = Field(
        UpdatePolicy.AUTOMATIC,
        description="Automatic (default): a change of its Draft Artifact restarts the pods onto it. Manual: the "
        "pods keep running what they run, the UpdateAvailable condition says what changed, and a restart "
        "(the kiln.dev/restartedAt annotation, kubectl kiln restart) moves them onto it.",
    )

    @model_validator(mode="after")
    def _exactly_one_artifact(self) -> Self:
        if (self.artifact_ref is None) == (self.artifact is None):
            raise ValueError(WORKLOAD_ARTIFACT_MESSAGE)
        return self


class WorkloadPhase(StrEnum):
    """What a Workload's status says of it (spec.state asks, status.state tells)."""

    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPED = "Stopped"
    FAILED = "Failed"


class WorkloadArtifactStatus(KilnModel):
    """The Artifact a Workload is running."""

    name: Name | None = Field(None, description="Name of the Artifact.")
    uid: Uid | None = Field(None, description="Its uid: the object the pods run.")
    lifecycle: Lifecycle | None = Field(None, description="Its lifecycle when last observed.")
    spec_digest: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="Digest of the artifact spec the pods run."
    )


class Endpoint(KilnModel):
    """Where a Workload or a Deployment can be reached in the cluster: one per declared port."""

    name: Annotated[str, StringConstraints(max_length=63)] = Field(description="The Service port's name.")
    url: Annotated[str, StringConstraints(max_length=512)] = Field(
        description="In-cluster URL: <scheme>://<service>.<namespace>.svc:<port>.")


Endpoints = Annotated[list[Endpoint] | None, Field(
    None, max_length=MAX_PORTS, description="In-cluster URLs of its Service, one per declared port.")]


class WorkloadStatus(KilnModel):
    """Observed state of a Workload."""

    observed_generation: ObservedGeneration = None
    conditions: Conditions = None
    state: WorkloadPhase | None = Field(
        None, description="Observed state: Pending, Starting, Running, Stopped or Failed."
    )
    artifact: WorkloadArtifactStatus | None = Field(None, description="The Artifact being run.")
    replicas: int | None = Field(None, ge=0, description="Number of pods the Workload runs (0 when Stopped).")
    ready_replicas: int | None = Field(None, ge=0, description="Number of ready pods.")
    restarted_at: ShortText | None = Field(
        None, description="Last kiln.dev/restartedAt annotation value acted upon."
    )
    endpoints: Endpoints = None


# --------------------------------------------------------------------------------------------------
# Deployment
# --------------------------------------------------------------------------------------------------


class PodDisruptionBudgetSpec(KilnModel):
    """A PodDisruptionBudget for the Deployment's pods."""

    min_available: IntOrPercent = Field(
        description="Pods (number or percentage) that must stay available during voluntary disruptions."
    )


class Importance(StrEnum):
    """How much a governed Deployment matters; governance keys on it."""

    CRITICAL = "Critical"
    HIGH = "High"
    MODERATE = "Moderate"
    LOW = "Low"


class DeploymentSpec(KilnModel):
    """Desired state of a Deployment: a governed, production run of a Registered Artifact."""

    artifact_ref: VersionedArtifactReference | None = Field(
        None,
        description="The Registered Artifact to run, by name or by collection and version; filled from "
        "workloadRef at admission when omitted.",
    )
    workload_ref: WorkloadReference | None = Field(
        None, description="The Workload this Deployment was promoted from (provenance)."
    )
    replicas: int = Field(1, ge=0, le=MAX_REPLICAS, description="Number of pods to run.")
    importance: Importance = Field(
        Importance.MODERATE, description="Critical, High, Moderate (default) or Low; used by governance."
    )
    pod_disruption_budget: PodDisruptionBudgetSpec | None = Field(
        None, description="Create a PodDisruptionBudget for the pods."
    )
    revision_history_limit: int = Field(
        10, ge=0, le=100,
        description="ReplicaSets of earlier rollouts the apps/v1 Deployment keeps, scaled to zero: a rollback "
        "to one of them reuses it (default 10).",
    )

    @model_validator(mode="after")
    def _artifact_or_workload(self) -> Self:
        if self.artifact_ref is None and self.workload_ref is None:
            raise ValueError(DEPLOYMENT_REF_MESSAGE)
        return self


class DeploymentArtifactStatus(KilnModel):
    """The Artifact a Deployment runs, pinned by digest."""

    name: Name | None = Field(None, description="Name of the Artifact.")
    uid: Uid | None = Field(None, description="Its uid: the object pinned (a reused name is another object).")
    collection: CollectionName | None = Field(None, description="Its collection, if it has one.")
    version: int | None = Field(None, ge=1, description="Its version in the collection.")
    spec_digest: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="Digest of the registered spec (and its images' digests) pinned by the Deployment."
    )


class HistoryAction(StrEnum):
    """What a Deployment's audit trail records."""

    CREATED = "Created"
    ARTIFACT_SWITCHED = "ArtifactSwitched"
    ROLLED_BACK = "RolledBack"  # switched back to an Artifact it ran before
    SCALED = "Scaled"
    IMPORTANCE_CHANGED = "ImportanceChanged"
    # Governance: a change waiting for approvals, and what became of it.
    APPROVAL_REQUESTED = "ApprovalRequested"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"


# The entries that record what production runs (the others record the governance of a change).
ROLLOUT_ACTIONS = frozenset({HistoryAction.CREATED, HistoryAction.ARTIFACT_SWITCHED, HistoryAction.ROLLED_BACK,
                             HistoryAction.SCALED, HistoryAction.IMPORTANCE_CHANGED})


class HistoryEntry(KilnModel):
    """One entry of a Deployment's audit trail."""

    time: DateTime = Field(description="When it happened.")
    action: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="What happened, in CamelCase, e.g. Created, ArtifactChanged, Scaled."
    )
    actor: ShortText | None = Field(None, description="Who did it (user name), when known.")
    artifact: Name | None = Field(None, description="The Artifact deployed after the action.")
    artifact_uid: Uid | None = Field(None, description="Its uid.")
    version: int | None = Field(None, ge=1, description="Its version in its collection.")
    from_version: int | None = Field(None, ge=1, description="The version deployed before (a switch or a rollback).")
    digest: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="Its spec digest."
    )
    replicas: int | None = Field(None, ge=0, description="The replicas deployed after the action.")
    importance: Importance | None = Field(None, description="The importance after the action.")
    generation: int | None = Field(None, ge=0, description="The Deployment's generation the entry is about.")
    message: ShortText | None = Field(None, description="Human-readable details.")


class DeploymentStatus(KilnModel):
    """Observed state of a Deployment."""

    observed_generation: ObservedGeneration = None
    conditions: Conditions = None
    artifact: DeploymentArtifactStatus | None = Field(None, description="The Artifact being run.")
    replicas: int | None = Field(None, ge=0, description="Number of pods the Deployment runs.")
    ready_replicas: int | None = Field(None, ge=0, description="Number of ready pods.")
    endpoints: Endpoints = None
    history: list[HistoryEntry] | None = Field(
        None,
        max_length=MAX_HISTORY,
        description=f"Audit trail, oldest first, the last {MAX_HISTORY} entries.",
    )


# --------------------------------------------------------------------------------------------------
# Governance: approval policies and approvals
# --------------------------------------------------------------------------------------------------


class Trigger(StrEnum):
    """The changes of a governed Deployment that a policy can make wait for approvals."""

    CREATE = "Create"
    ARTIFACT_SWITCH = "ArtifactSwitch"
    IMPORTANCE_CHANGE = "ImportanceChange"
    SCALE_TO_ZERO = "ScaleToZero"
    DELETE = "Delete"


class ApprovalRule(KilnModel):
    """How many approvals a change of a Deployment of one importance needs."""

    importance: Importance = Field(description="Critical, High, Moderate or Low.")
    approvals: int = Field(ge=0, le=5, description="Distinct approvers needed (0: none).")


DEFAULT_RULES = (("Critical", 2), ("High", 1), ("Moderate", 0), ("Low", 0))


class ApprovalPolicySpec(KilnModel):
    """Which changes of governed Deployments wait for approvals, how many, and for how long. The policy
    of a namespace is its ApprovalPolicy named ``default``, else the operator's default (the chart's
    ``governance.defaultPolicy``)."""

    rules: Annotated[list[ApprovalRule], _keyed("importance", max_length=4, description=(
        "Approvals needed per importance; an importance not listed needs none."))] = Field(
        default_factory=lambda: [ApprovalRule(importance=Importance(i), approvals=n) for i, n in DEFAULT_RULES])
    triggers: list[Trigger] = Field(
        default_factory=lambda: list(Trigger), max_length=5,
        description="The changes that wait for approvals: Create, ArtifactSwitch, ImportanceChange, ScaleToZero, "
        "Delete (all by default).")
    expire_after_seconds: int = Field(
        7 * 24 * 3600, ge=1, le=365 * 24 * 3600,
        description="A change still waiting for approvals after this long expires (default one week).")

    def approvals_for(self, importance: Importance) -> int:
        return next((r.approvals for r in self.rules if r.importance == importance), 0)


class ApprovalPolicyStatus(KilnModel):
    """Observed state of an ApprovalPolicy (the operator reads policies; it reports nothing on them)."""

    observed_generation: ObservedGeneration = None


class DeploymentReference(KilnModel):
    """A reference to a governed Deployment in the same namespace."""

    name: Name = Field(description="Name of the Deployment (deployments.kiln.dev).")


APPROVAL_IMMUTABLE_MESSAGE = "an Approval is immutable: create another one"


class ApprovalDecision(StrEnum):
    APPROVE = "Approve"
    REJECT = "Reject"


class ApprovalSpec(KilnModel):
    """A reviewer's decision on one change (one generation) of a governed Deployment. Immutable; the
    approver is stamped at admission from the request's identity."""

    deployment_ref: DeploymentReference = Field(description="The Deployment whose change this decides.")
    generation: int = Field(ge=1, description="The Deployment's metadata.generation being decided.")
    decision: ApprovalDecision = Field(description="Approve or Reject.")
    deletion: bool = Field(False, description="It decides deleting the Deployment, not a change of it.")
    comment: ShortText | None = Field(None, description="Why.")
    approver: ShortText | None = Field(None, description="Who decided: set at admission, never by the user.")


class ApprovalStatus(KilnModel):
    """Observed state of an Approval (the decision is its spec; the Deployment's history records it)."""

    observed_generation: ObservedGeneration = None


# --------------------------------------------------------------------------------------------------
# Whole objects, as the operator receives them (not part of the CRD schemas)
# --------------------------------------------------------------------------------------------------

S = TypeVar("S", bound=KilnModel)


def _or_empty(model: type[S]) -> Callable[[Any, ValidatorFunctionWrapHandler], S]:
    """A status that does not parse counts as none: users who may write status must not be able to
    stop the operator (it writes the status anew)."""
    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> S:
        try:
            parsed: S = handler(value)
            return parsed
        except ValidationError:
            return model()
    return validate


def status_of(model: type[S], body: Any) -> S:
    """An object's status as its model, or an empty one when it has none or it does not parse."""
    try:
        return model.model_validate((body or {}).get("status") or {})
    except ValidationError:
        return model()


class ObjectMeta(KilnModel):
    """The metadata the operator reads."""

    name: str
    namespace: str = ""
    uid: str = ""
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None


class Artifact(KilnModel):
    metadata: ObjectMeta
    spec: ArtifactSpec
    status: Annotated[ArtifactStatus, WrapValidator(_or_empty(ArtifactStatus))] = Field(
        default_factory=ArtifactStatus)


class Workload(KilnModel):
    metadata: ObjectMeta
    spec: WorkloadSpec
    status: Annotated[WorkloadStatus, WrapValidator(_or_empty(WorkloadStatus))] = Field(
        default_factory=WorkloadStatus)

    @property
    def artifact_name(self) -> str:
        """The Artifact it runs: the referenced one, or the one made from its inline artifact."""
        return self.spec.artifact_ref.name if self.spec.artifact_ref else self.metadata.name


class Deployment(KilnModel):
    metadata: ObjectMeta
    spec: DeploymentSpec
    status: Annotated[DeploymentStatus, WrapValidator(_or_empty(DeploymentStatus))] = Field(
        default_factory=DeploymentStatus)


class Approval(KilnModel):
    metadata: ObjectMeta
    spec: ApprovalSpec
