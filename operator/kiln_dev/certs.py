"""Certificates for development: the webhooks `kiln run` serves on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_MAKE_SERVING_CERTIFICATE = """
import sys, pathlib, trustme
d = pathlib.Path(sys.argv[1])
d.mkdir(parents=True, exist_ok=True)
ca = trustme.CA(organization_name="kiln local webhooks")
leaf = ca.issue_cert("127.0.0.1", "localhost")
ca.cert_pem.write_to_path(str(d / "ca.crt"))
leaf.cert_chain_pems[0].write_to_path(str(d / "tls.crt"))
leaf.private_key_pem.write_to_path(str(d / "tls.key"))
(d / "tls.key").chmod(0o600)
"""


def serving_certificate(certdir: Path) -> None:
    """A CA (ca.crt) and a serving certificate for 127.0.0.1 (tls.crt, tls.key) in certdir, made in a
    short-lived process: the operator does not keep the cryptography library in memory for a one-off."""
    subprocess.run([sys.executable, "-c", _MAKE_SERVING_CERTIFICATE, str(certdir)], check=True)
