"""The admission webhook server as the operator runs it: a process of its own (:mod:`kiln.admission.server`)
started next to kopf, and, for `kiln run` outside a cluster, its webhook configurations registered by URL."""

from __future__ import annotations

import base64
import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import kube
from kiln.admission.configuration import policies, roles, webhook_configurations
from kiln.names import POLICY_PREFIX, ROLE_PREFIX, WEBHOOK_CONFIG_NAME

HOST = "127.0.0.1"
Logger = logging.Logger | logging.LoggerAdapter[Any]
Body = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


@dataclass
class Webhooks:
    """Where and how the admission webhooks are served.

    Development (``kiln run``): on 127.0.0.1 with a certificate made at start-up, registered with the
    API server by URL. In a cluster (``--webhook-cert-dir``, the Helm chart): on the address the chart
    gives (``--webhook-addr``, the pod's IP by default; all interfaces without it) with the mounted
    certificate; the chart owns the webhook configurations."""

    port: int
    certdir: Path
    addr: str = HOST
    register: bool = True
    server_args: tuple[str, ...] = ()  # more arguments of the server (its metrics endpoint, its log format)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 30) -> None:
        """Start the webhook server's process and return once it accepts connections."""
        self.process = subprocess.Popen([
            sys.executable, "-m", "kiln.admission.server", f"--addr={self.addr}", f"--port={self.port}",
            f"--cert={self.certdir / 'tls.crt'}", f"--key={self.certdir / 'tls.key'}", *self.server_args])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the webhook server exited with code {self.process.returncode}")
            if listening(self.port, self.reachable_at):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the webhook server did not listen on port {self.port} within {timeout:.0f}s")

    @property
    def reachable_at(self) -> str:
        """Where this host reaches the server: its address, or 127.0.0.1 when it listens on all."""
        return HOST if self.addr in ("", "0.0.0.0", "::") else self.addr

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def registrations(self) -> list[tuple[str, Body]]:
        """What `kiln run` registers with the API server: (kind, in the client's method names; object)."""
        ca = base64.b64encode((self.certdir / "ca.crt").read_bytes()).decode()
        validating, mutating = webhook_configurations({"url": f"https://{HOST}:{self.port}", "caBundle": ca},
                                                      WEBHOOK_CONFIG_NAME)
        kinds = {"ValidatingAdmissionPolicy": "validating_admission_policy",
                 "ValidatingAdmissionPolicyBinding": "validating_admission_policy_binding"}
        return [("validating_webhook_configuration", validating), ("mutating_webhook_configuration", mutating),
                *((kinds[p["kind"]], p) for p in policies(POLICY_PREFIX))]

    def register_configurations(self, logger: Logger) -> None:
        """Create (or replace) the webhook configurations and the admission policies."""
        api = kube.admission_api()
        for kind, body in self.registrations():
            name = body["metadata"]["name"]
            if kube.ignore(409)(getattr(api, f"create_{kind}"))(body) is None:  # left by an unclean stop
                version = getattr(api, f"read_{kind}")(name).metadata.resource_version  # a replace needs it
                getattr(api, f"replace_{kind}")(name, {**body, "metadata": {**body["metadata"],
                                                                          "resourceVersion": version}})
        rbac = kube.rbac()
        for role in roles(ROLE_PREFIX):  # the personas' roles stay after a stop: bindings refer to them
            if kube.ignore(409)(rbac.create_cluster_role)(role) is None:
                rbac.patch_cluster_role(role["metadata"]["name"], role)
        logger.info(f"registered validating/mutatingwebhookconfiguration {WEBHOOK_CONFIG_NAME}, "
                    f"validatingadmissionpolicies {POLICY_PREFIX}-* and clusterroles {ROLE_PREFIX}-*")

    def unregister_configurations(self, logger: Logger) -> None:
        api = kube.admission_api()
        for kind, body in reversed(self.registrations()):
            kube.ignore(404)(getattr(api, f"delete_{kind}"))(body["metadata"]["name"])
        logger.info(f"removed validating/mutatingwebhookconfiguration {WEBHOOK_CONFIG_NAME} and "
                    f"validatingadmissionpolicies {POLICY_PREFIX}-*")
