"""What only a real node can show: readiness answered by the container, a process that exits, an image
that cannot be pulled, and the node's network confinement."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import answer, service_url
from tests.integration.test_workloads import container, create, get, pods, wait_running, workload
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster
SCORER_V1 = "127.0.0.1:5001/kiln/scorer:v1"
READY_PROBE = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}


def ready(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return Kube.condition(get(kube, ns, "workloads", name), "Ready") or {}


def test_a_pod_is_ready_only_once_its_container_answers(kube: Kube, operator: Operator, real_namespace: str) -> None:
    """The model takes 4 s to load: its pod runs but is not Ready, the Workload says Starting, and the
    model answers only once the kubelet's probe of /ready has passed."""
    ns = real_namespace
    slow = container(SCORER_V1, readinessProbe=READY_PROBE, env=[{"name": "SCORER_LOAD_SECONDS", "value": "4"}])
    create(kube, ns, workload("slow", inline=[slow]))

    def running_not_ready() -> Any:
        ps = pods(kube, ns, "slow")
        return ps and ps[0].status.phase == "Running" and ps[0].status.container_statuses \
            and ps[0].status.container_statuses[0].state.running and not ps[0].status.container_statuses[0].ready
    kube.wait(running_not_ready, what="the container running, not ready yet", timeout=60)
    started = time.monotonic()
    st = get(kube, ns, "workloads", "slow")["status"]
    assert st["state"] == "Starting" and st["readyReplicas"] == 0, st
    assert ready(kube, ns, "slow")["reason"] == "PodsNotReady"

    obj = wait_running(kube, ns, "slow", timeout=60)
    assert time.monotonic() - started > 1.5, "Ready before the model could have loaded"
    assert obj["status"]["readyReplicas"] == 1
    url, expected = service_url(kube, ns, "slow-dev", "/predict"), {"model": "scorer", "version": "v1", "score": 1.0}
    kube.wait(lambda: answer(url, {"features": [2]}) == expected, what=f"{url} to answer", timeout=30)


def test_a_process_that_exits_fails_the_workload_with_the_container_reason(
        kube: Kube, operator: Operator, real_namespace: str) -> None:
    ns = real_namespace
    crash = container(SCORER_V1, command=["python3", "-c", "import sys; print('model file missing'); sys.exit(3)"])
    create(kube, ns, workload("crash", inline=[crash]))

    def failed() -> Any:
        st = get(kube, ns, "workloads", "crash").get("status") or {}
        return st if st.get("state") == "Failed" else None
    st = kube.wait(failed, what="the workload Failed", timeout=90)
    cond = ready(kube, ns, "crash")
    assert cond["status"] == "False" and cond["reason"] == "PodsFailing", cond
    assert "container app: CrashLoopBackOff" in cond["message"], cond
    [pod] = pods(kube, ns, "crash")
    last = pod.status.container_statuses[0].last_state.terminated
    assert last.exit_code == 3 and last.reason == "Error", last
    assert "model file missing" in kube.kubectl("-n", ns, "logs", pod.metadata.name, "--previous").stdout
    assert st["readyReplicas"] == 0


def test_an_image_that_does_not_exist_says_so_in_the_workload(kube: Kube, operator: Operator,
                                                              real_namespace: str) -> None:
    ns = real_namespace
    image = "127.0.0.1:5001/kiln/no-such-model:v0"
    create(kube, ns, workload("ghost", inline=[container(image)]))

    def pull_failed() -> Any:
        cond = ready(kube, ns, "ghost")
        return cond if cond.get("reason") == "PodsFailing" else None
    cond = kube.wait(pull_failed, what="the workload to report the failed pull", timeout=90)
    assert get(kube, ns, "workloads", "ghost")["status"]["state"] == "Failed"
    assert "container app: ImagePullBackOff" in cond["message"] or "container app: ErrImagePull" in cond["message"]
    assert image in cond["message"], cond


def test_pods_reach_the_api_server_but_nothing_outside_the_cluster(kube: Kube, operator: Operator,
                                                                  real_namespace: str,
                                                                  real_node: dict[str, Any]) -> None:
    """From inside a pod: the kubernetes Service answers (through the node's relay); the host's end of
    the node's link refuses new connections; any other address has no route (the pod has none: the
    connection fails before a packet is sent)."""
    ns = real_namespace
    create(kube, ns, workload("probe", inline=[container(SCORER_V1, readinessProbe=READY_PROBE)]))
    wait_running(kube, ns, "probe", timeout=60)
    [pod] = pods(kube, ns, "probe")
    slot = real_node["slot"]
    script = f"""
import errno, os, socket
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return errno.errorcode[e.errno]
for host, port in ((os.environ["KUBERNETES_SERVICE_HOST"], 443), ("198.19.{16 * slot + 15}.253", 22),
                   ("198.19.{16 * slot + 15}.253", 2024), ("192.0.2.1", 53), ("1.1.1.1", 443), ("8.8.8.8", 53)):
    print(reach(host, port))
"""
    out = kube.kubectl("-n", ns, "exec", pod.metadata.name, "--", "python3", "-c", script).stdout.split()
    assert out == ["open", "ECONNREFUSED", "ECONNREFUSED", "ENETUNREACH", "ENETUNREACH", "ENETUNREACH"], out
