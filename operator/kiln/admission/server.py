"""The admission webhook server: `python -m kiln.admission.server`, a process of its own next to the operator.

Admission reviews are answered here, never queued behind the reconcilers' work, which keeps them
fast under load (the API server waits for them on every write). The standard library's threaded
HTTP server is enough: the API server keeps a few connections open and reuses them (HTTP/1.1
keep-alive), one thread each; it keeps this process small (no aiohttp).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kiln.admission import handlers

log = logging.getLogger("kiln.admission")
MAX_BODY = 8 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "kiln-webhook"

    def do_POST(self) -> None:
        hook = self.path.split("?", 1)[0].lstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._json(413, {"error": f"request body over {MAX_BODY} bytes"})
        data = self.rfile.read(length)
        if hook not in handlers.HANDLERS:
            return self._json(404, {"error": f"no webhook {hook}"})
        try:
            body = json.loads(data)
            req = body["request"]
        except (ValueError, KeyError, TypeError):
            return self._json(400, {"error": "expected an AdmissionReview"})
        response = handlers.answer(hook, req)
        if not response["allowed"]:
            log.info(f"{hook}: denied {req.get('operation')} in {req.get('namespace')}: "
                     f"{response['status']['message']}")
        self._json(200, {"apiVersion": body.get("apiVersion", "admission.k8s.io/v1"), "kind": "AdmissionReview",
                         "response": response})

    def do_GET(self) -> None:
        if self.path == "/healthz":
            return self._send(200, b"ok", "text/plain")
        self._json(404, {"error": "not found"})

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # no access log
        return


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext) -> None:
        super().__init__(addr, Handler)
        self.ctx = ctx

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        # Headers and body go out as two writes: without this, Nagle's algorithm holds the second
        # until the client's delayed ACK (40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake happens in the connection's own thread, on its first read.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Probes that connect and leave, clients that fail the handshake: not worth a traceback.
        log.debug(f"connection from {client_address} ended with an error", exc_info=True)


def every(interval: float, fn: Any) -> None:
    def loop() -> None:
        while True:
            time.sleep(interval)
            fn()

    threading.Thread(target=loop, daemon=True).start()


def reload_certificate(ctx: ssl.SSLContext, cert: str, key: str, interval: float) -> None:
    """Load a renewed certificate (cert-manager rotates the mounted Secret): new handshakes use it."""
    def stamp() -> tuple[float, float]:
        return os.stat(cert).st_mtime, os.stat(key).st_mtime

    seen = [stamp()]

    def check() -> None:
        try:
            now = stamp()
            if now != seen[0]:
                ctx.load_cert_chain(cert, key)
                seen[0] = now
                log.info("reloaded the serving certificate")
        except (OSError, ssl.SSLError) as e:  # mid-rotation: try again next round
            log.warning(f"could not reload the serving certificate yet: {e}")

    every(interval, check)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiln.admission.server", description=__doc__)
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True, help="PEM certificate (chain)")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--reload-interval", type=float, default=30.0,
                   help="seconds between checks for a renewed certificate")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    server = Server((args.addr, args.port), ctx)
    reload_certificate(ctx, args.cert, args.key, args.reload_interval)

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The operator started this process: when it is gone (even killed), so is this one.
    parent = os.getppid()

    def parent_gone() -> None:
        if os.getppid() != parent:
            log.warning("the operator process is gone: exiting")
            stop()

    every(1.0, parent_gone)
    log.info(f"serving admission reviews on https://{args.addr}:{args.port}")
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
