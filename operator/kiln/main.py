"""The operator: kopf settings, the TLS webhook server, and ``run``."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import trustme
from kubernetes.client.rest import ApiException

# Handlers register themselves with kopf on import.
from kiln import admission, artifacts, deployments, kube, workloads  # noqa: F401
from kiln.cluster import free_port

# kopf's own annotations. Not "kiln.dev": kopf leaves annotations under its prefix out of the diff it
# reacts to, and users' kiln.dev/restartedAt must trigger a reconcile.
PREFIX = "operator.kiln.dev"
log = logging.getLogger("kiln")


@dataclass
class Webhooks:
    """Where and how the admission webhooks are served.

    Development (``kiln run``): on 127.0.0.1 with a certificate made at start-up, registered with the
    API server by URL. In a cluster (``--webhook-cert-dir``, the Helm chart): on all interfaces of the
    pod with the mounted certificate; the chart owns the webhook configurations."""

    port: int
    certdir: Path
    addr: str = "127.0.0.1"
    register: bool = True

    def make_certificates(self) -> None:
        self.certdir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="kiln local webhooks")
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(self.certdir / "ca.crt"))
        leaf.cert_chain_pems[0].write_to_path(str(self.certdir / "tls.crt"))
        leaf.private_key_pem.write_to_path(str(self.certdir / "tls.key"))
        (self.certdir / "tls.key").chmod(0o600)

    def server(self) -> kopf.WebhookServer:
        ca = self.certdir / "ca.crt"
        return kopf.WebhookServer(addr=self.addr, port=self.port, host="127.0.0.1",
                                  certfile=str(self.certdir / "tls.crt"), pkeyfile=str(self.certdir / "tls.key"),
                                  cafile=str(ca) if ca.exists() else None)

    def configurations(self) -> tuple[dict[str, Any], dict[str, Any]]:
        ca = base64.b64encode((self.certdir / "ca.crt").read_bytes()).decode()
        return admission.webhook_configurations({"url": f"https://127.0.0.1:{self.port}", "caBundle": ca})


_webhooks: Webhooks | None = None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.persistence.finalizer = "kiln.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.execution.max_workers = int(os.environ.get("KILN_WORKERS", "20"))
    settings.networking.request_timeout = 60
    if _webhooks is None:
        return
    settings.admission.server = _webhooks.server()
    settings.admission.managed = None
    logger.info(f"webhooks served on https://{_webhooks.addr}:{_webhooks.port}")
    if _webhooks.register:
        validating, mutating = _webhooks.configurations()
        api = kube.admission_api()
        for body, create, replace in (
                (validating, api.create_validating_webhook_configuration,
                 api.replace_validating_webhook_configuration),
                (mutating, api.create_mutating_webhook_configuration, api.replace_mutating_webhook_configuration)):
            try:
                create(body)
            except ApiException as e:
                if e.status != 409:
                    raise
                replace(admission.CONFIG_NAME, body)
        logger.info(f"registered validating/mutatingwebhookconfiguration {admission.CONFIG_NAME}")


@kopf.on.cleanup()
def remove_local_webhooks(logger: logging.Logger, **_: Any) -> None:
    if _webhooks is not None and _webhooks.register:
        api = kube.admission_api()
        kube.ignore(404)(api.delete_validating_webhook_configuration)(admission.CONFIG_NAME)
        kube.ignore(404)(api.delete_mutating_webhook_configuration)(admission.CONFIG_NAME)
        logger.info(f"removed validating/mutatingwebhookconfiguration {admission.CONFIG_NAME}")


def run(namespaces: list[str], webhook_port: int = 0, webhooks: bool = True, register_webhooks: bool = True,
        webhook_cert_dir: str | None = None, liveness: str | None = None) -> int:
    """Run the operator until interrupted, against the current kubeconfig (or in-cluster config)."""
    global _webhooks
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if webhooks and webhook_cert_dir:
        _webhooks = Webhooks(port=webhook_port or 9443, certdir=Path(webhook_cert_dir), addr="0.0.0.0",
                             register=False)
    elif webhooks:
        state = Path(os.environ.get("KILN_OPERATOR_DIR")
                     or Path.home() / ".local" / "state" / "kiln" / "operator")
        _webhooks = Webhooks(port=webhook_port or free_port(), certdir=state / "webhook-certs",
                             register=register_webhooks)
        _webhooks.make_certificates()
    asyncio.run(kopf.operator(
        standalone=True,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=liveness,
    ))
    return 0
