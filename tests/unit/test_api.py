"""The pydantic models: aliases, defaults, and the same rules as the CRD schema and CEL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kiln.api import models as api
from kiln.api.models import (
    ArtifactSpec,
    ArtifactStatus,
    DeploymentSpec,
    DeploymentStatus,
    Lifecycle,
    WorkloadSpec,
    WorkloadStatus,
)


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "nginx:1.27", **extra}


def test_artifact_spec_defaults_and_aliases() -> None:
    spec = ArtifactSpec.model_validate(
        {"displayName": "My app", "containers": [container(workingDir="/srv", ports=[{"containerPort": 80}])]}
    )
    assert spec.display_name == "My app"
    assert spec.lifecycle is Lifecycle.DRAFT
    assert not spec.registered
    assert spec.primary_container.working_dir == "/srv"
    assert spec.containers[0].ports is not None
    assert spec.containers[0].ports[0].protocol == "TCP"
    assert spec.to_dict() == {
        "displayName": "My app",
        "lifecycle": "Draft",
        "containers": [
            {
                "name": "app",
                "image": "nginx:1.27",
                "workingDir": "/srv",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
            },
        ],
    }


def test_populate_by_name_and_unknown_fields_ignored() -> None:
    spec = ArtifactSpec.model_validate(
        {"display_name": "x", "containers": [container(securityContext={"privileged": True})], "extra": 1}
    )
    assert spec.display_name == "x"
    assert "securityContext" not in spec.to_dict()["containers"][0]
    assert "extra" not in spec.to_dict()


def test_full_container_parses() -> None:
    c = container(
        command=["/bin/app"],
        args=["--port", "8080"],
        imagePullPolicy="IfNotPresent",
        env=[
            {"name": "A", "value": "1"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {
                "name": "MODE",
                "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": True}},
            },
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        ports=[{"name": "http", "containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}],
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
        readinessProbe={
            "httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [{"name": "X", "value": "y"}]},
            "periodSeconds": 5,
        },
        livenessProbe={"tcpSocket": {"port": 8080}, "failureThreshold": 3},
        startupProbe={"exec": {"command": ["true"]}, "initialDelaySeconds": 0},
    )
    spec = ArtifactSpec.model_validate(
        {"containers": [c, {"name": "grpc", "image": "g", "livenessProbe": {"grpc": {"port": 9090}}}]}
    )
    out = spec.to_dict()["containers"][0]
    assert out["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert out["readinessProbe"]["httpGet"]["port"] == "http"
    assert out["env"][1]["valueFrom"] == {"secretKeyRef": {"name": "db", "key": "password"}}
    assert out["ports"][1] == {"containerPort": 53, "protocol": "UDP"}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"containers": []}, "at least 1"),
        ({}, "containers"),
        ({"containers": [container(name="Bad_Name")]}, "pattern"),
        ({"containers": [container(image="")]}, "at least 1"),
        ({"containers": [container(), container()]}, "duplicate container name"),
        ({"containers": [container(env=[{"name": "A"}, {"name": "A"}])]}, "duplicate env name"),
        (
            {
                "containers": [
                    container(ports=[{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}])
                ]
            },
            "duplicate port",
        ),
        ({"containers": [container(ports=[{"containerPort": 0}])]}, "greater than or equal to 1"),
        ({"containers": [container(ports=[{"containerPort": 80, "protocol": "HTTP"}])]}, "TCP"),
        ({"containers": [container(resources={"limits": {"cpu": "lots"}})]}, "cpu"),
        ({"lifecycle": "Final", "containers": [container()]}, "Draft"),
    ],
)
def test_invalid_artifact_specs(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ArtifactSpec.model_validate(spec)


def test_locked_fields() -> None:
    assert ArtifactSpec.locked_fields() == ["collection", "containers", "image_pull_secrets"]
    assert ArtifactSpec.locked_aliases() == ["collection", "containers", "imagePullSecrets"]
    assert {"display_name", "description", "lifecycle"} == api.ARTIFACT_UNLOCKED_FIELDS


def test_workload_spec() -> None:
    ref = WorkloadSpec.model_validate({"artifactRef": {"name": "my-app"}})
    assert (ref.replicas, ref.state) == (1, "Running")
    inline = WorkloadSpec.model_validate(
        {"artifact": {"displayName": "App", "containers": [container()]}, "state": "Stopped", "replicas": 0}
    )
    assert inline.artifact is not None
    assert inline.artifact.containers[0].name == "app"
    meta = {"name": "wl", "namespace": "ns"}
    assert api.Workload(metadata=meta, spec=ref).artifact_name == "my-app"
    assert api.Workload(metadata=meta, spec=inline).artifact_name == "wl", "an inline artifact is named after it"


def test_a_status_that_does_not_parse_counts_as_none() -> None:
    """Users who may write status must not be able to stop the operator: it writes the status anew."""
    body = {"metadata": {"name": "wl"}, "spec": {"artifactRef": {"name": "a"}},
            "status": {"state": "Hijacked", "replicas": -1}}
    assert api.Workload.model_validate(body).status == api.WorkloadStatus()
    assert api.status_of(api.WorkloadStatus, body) == api.WorkloadStatus()
    assert api.status_of(api.WorkloadStatus, {"status": {"state": "Running"}}).state == api.WorkloadPhase.RUNNING


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"artifactRef": {"name": "a"}, "artifact": {"containers": [container()]}},
    ],
)
def test_workload_needs_exactly_one_artifact(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=api.WORKLOAD_ARTIFACT_MESSAGE):
        WorkloadSpec.model_validate(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"artifactRef": {"name": "a"}, "replicas": 101},
        {"artifactRef": {"name": "a"}, "replicas": -1},
        {"artifactRef": {"name": "a"}, "state": "Paused"},
    ],
)
def test_workload_invalid(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkloadSpec.model_validate(spec)


def test_deployment_spec() -> None:
    spec = DeploymentSpec.model_validate({"workloadRef": {"name": "my-app"}})
    assert (spec.replicas, spec.importance, spec.artifact_ref) == (1, "Moderate", None)
    full = DeploymentSpec.model_validate(
        {
            "artifactRef": {"name": "a"},
            "importance": "Critical",
            "podDisruptionBudget": {"minAvailable": "50%"},
        }
    )
    assert full.pod_disruption_budget is not None
    assert full.pod_disruption_budget.min_available == "50%"
    with pytest.raises(ValidationError, match=api.DEPLOYMENT_REF_MESSAGE):
        DeploymentSpec.model_validate({"replicas": 2})
    with pytest.raises(ValidationError):
        DeploymentSpec.model_validate({"artifactRef": {"name": "a"}, "importance": "Urgent"})


def test_statuses_round_trip() -> None:
    cond = {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "ok",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 2,
    }
    art = {
        "observedGeneration": 2,
        "conditions": [cond],
        "lifecycle": "Registered",
        "specDigest": "sha256:" + "0" * 64,
        "registeredAt": "2026-01-01T00:00:00Z",
        "registeredBy": "alice",
    }
    assert ArtifactStatus.model_validate(art).to_dict() == art
    wl = {
        "observedGeneration": 1,
        "conditions": [cond],
        "state": "Running",
        "artifact": {"name": "a", "lifecycle": "Draft", "specDigest": "sha256:x"},
        "replicas": 1,
        "readyReplicas": 1,
        "restartedAt": "2026-01-01T00:00:00Z",
    }
    assert WorkloadStatus.model_validate(wl).to_dict() == wl
    dep = {
        "observedGeneration": 1,
        "conditions": [cond],
        "artifact": {"name": "a", "specDigest": "sha256:x"},
        "replicas": 1,
        "readyReplicas": 0,
        "history": [
            {
                "time": "2026-01-01T00:00:00Z",
                "action": "Created",
                "actor": "alice",
                "artifact": "a",
                "digest": "sha256:x",
                "message": "created",
            }
        ],
    }
    assert DeploymentStatus.model_validate(dep).to_dict() == dep
    assert ArtifactStatus.model_validate({}).to_dict() == {}


def test_rejection_messages_are_one_line_and_say_why() -> None:
    messages = [
        api.ARTIFACT_NO_RETURN_MESSAGE,
        api.ARTIFACT_LOCKED_MESSAGE,
        api.ARTIFACT_LOCKED_MESSAGE_MANY,
        api.ARTIFACT_CONTAINERS_LOCKED_MESSAGE,
        api.WORKLOAD_ARTIFACT_MESSAGE,
        api.WORKLOAD_INLINE_ARTIFACT_MESSAGE,
        api.DEPLOYMENT_REF_MESSAGE,
        api.WORKLOAD_NAME_MESSAGE,
        api.DEPLOYMENT_NAME_MESSAGE,
    ]
    for message in messages:
        assert "\n" not in message
        assert message.split(" ")[0].startswith(("spec", "metadata.name", "{field")), message
    assert api.ARTIFACT_LOCKED_MESSAGE.startswith("{field} is locked: the Artifact is Registered")
    assert api.ARTIFACT_LOCKED_MESSAGE_MANY.startswith("{fields} are locked: the Artifact is Registered")
    assert str(api.MAX_WORKLOAD_NAME_LENGTH) in api.WORKLOAD_NAME_MESSAGE
    assert str(api.MAX_DEPLOYMENT_NAME_LENGTH) in api.DEPLOYMENT_NAME_MESSAGE
