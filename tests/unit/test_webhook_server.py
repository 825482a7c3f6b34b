"""The admission webhook server as a process: TLS, answers, certificate renewal, parent death."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme
from tests.kube import Kube

from kiln.admission.process import free_port, listening


def write_cert(ca: trustme.CA, d: Path) -> str:
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(d / "tls.crt"))
    leaf.private_key_pem.write_to_path(str(d / "tls.key"))
    return leaf.cert_chain_pems[0].bytes().decode()


def served_cert(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as s, ctx.wrap_socket(s) as tls:
        return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))


@pytest.fixture
def server(tmp_path: Path) -> Any:
    ca = trustme.CA()
    write_cert(ca, tmp_path)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kiln.admission.server", f"--port={port}",
                             f"--cert={tmp_path / 'tls.crt'}", f"--key={tmp_path / 'tls.key'}",
                             "--reload-interval=0.2"])
    Kube.wait(lambda: listening(port), what="webhook server listening", timeout=30)
    yield ca, tmp_path, port
    proc.terminate()
    proc.wait(10)


def test_answers_a_review_over_tls(server: Any) -> None:
    _, d, port = server
    old = {"apiVersion": "kiln.dev/v1alpha1", "kind": "Artifact", "metadata": {"name": "a", "namespace": "ns"},
           "spec": {"lifecycle": "Registered", "containers": [{"name": "app", "image": "x:1"}]}}
    new = json.loads(json.dumps(old))
    new["spec"]["containers"][0]["image"] = "x:2"
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "operation": "UPDATE", "name": "a", "namespace": "ns", "object": new, "oldObject": old,
        "userInfo": {"username": "alice"}}}
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    req = urllib.request.Request(f"https://127.0.0.1:{port}/validate-artifact", data=json.dumps(review).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        resp = json.loads(r.read())["response"]
    assert resp["uid"] == "u1" and resp["allowed"] is False
    assert resp["status"]["message"].startswith("Artifact a is Registered and its spec is locked: "
                                                "spec.containers[0].image changed")


def test_a_renewed_certificate_is_served_without_restart(server: Any) -> None:
    ca, d, port = server
    before = served_cert(port)
    renewed = write_cert(ca, d)
    assert renewed != before
    Kube.wait(lambda: served_cert(port) == renewed, what="the renewed certificate served", timeout=20)


def test_exits_when_the_operator_is_killed(tmp_path: Path) -> None:
    """A parent that starts the server and is then SIGKILLed leaves no webhook server behind."""
    ca = trustme.CA()
    write_cert(ca, tmp_path)
    port = free_port()
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-m', 'kiln.admission.server', '--port={port}', "
        f"'--cert={tmp_path / 'tls.crt'}', '--key={tmp_path / 'tls.key'}']); time.sleep(600)")])
    try:
        Kube.wait(lambda: listening(port), what="webhook server listening", timeout=30)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    Kube.wait(lambda: not listening(port), what="webhook server gone with its parent", timeout=15)
