"""A tiny model server for Kiln's tutorial: the "scorer" a data-science team iterates on.

GET /ready answers 200 once the model is loaded (SCORER_LOAD_SECONDS simulates a slow load);
POST /predict with {"features": [numbers]} answers {"model", "version", "score"}, the score being a
weighted sum whose weights depend on the version (so v1 and v2 give different answers).
Standard library only; listens on 0.0.0.0:$PORT (default 8080) inside its pod.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("SCORER_VERSION", "v1")
WEIGHTS = {"v1": 0.5, "v2": 2.0, "v3": 3.0}
LOAD_SECONDS = float(os.environ.get("SCORER_LOAD_SECONDS", "0"))
loaded = threading.Event()


def score(features: list[float]) -> float:
    return round(WEIGHTS.get(VERSION, 1.0) * sum(features), 6)


class Handler(BaseHTTPRequestHandler):
    server_version = f"scorer/{VERSION}"

    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if self.path == "/ready":
            self._send(200, {"ready": True}) if loaded.is_set() else self._send(503, {"ready": False})
        elif self.path == "/healthz":
            self._send(200, {"ok": True})
        elif self.path.startswith("/predict"):
            self._send(200, {"model": "scorer", "version": VERSION, "score": score([])})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.startswith("/predict"):
            self._send(404, {"error": f"no route {self.path}"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            features = [float(x) for x in body.get("features", [])]
        except (ValueError, TypeError, AttributeError) as e:
            self._send(400, {"error": f"expected {{\"features\": [numbers]}}: {e}"})
            return
        self._send(200, {"model": "scorer", "version": VERSION, "score": score(features)})

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 - inside its own pod
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())

    def load() -> None:
        time.sleep(LOAD_SECONDS)
        loaded.set()
        print(f"scorer {VERSION}: model loaded, serving on :{port}", flush=True)

    threading.Thread(target=load, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
