"""The admission webhook server: `python -m kiln.admission.server`, a process of its own next to the operator.

Admission reviews are answered here, never queued behind the reconcilers' work, which keeps them
fast under load (the API server waits for them on every write). The standard library's threaded
HTTP server is enough: the API server keeps a few connections open and reuses them (HTTP/1.1
keep-alive), one thread each; it keeps this process small (no aiohttp).

What a client can hold of it is bounded:

- time: a request (on a new connection: the TLS handshake too) must arrive whole within
  ``--request-timeout`` (10 s) of its first byte (of the accept), however slowly it trickles in; a
  kept-alive connection may wait ``--idle-timeout`` (120 s, above the 90 s after which Go's HTTP
  client, the API server's, closes an idle connection itself) for its next request;
- threads: at most ``--max-connections`` (64) connections are served at once, one thread each; as many
  more wait up to a second for a place (an idle kept-alive connection is closed to make one), the
  rest are closed at once;
- memory: a body needs a Content-Length (no chunked bodies) of at most ``MAX_BODY``, and headers are
  bounded by :mod:`http.client` (100 lines of 64 KiB).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import logging
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kiln import logs, metrics
from kiln.admission import handlers

log = logging.getLogger("kiln.admission")
# An AdmissionReview carries the object and, for updates, the old one: etcd keeps objects up to 1.5 MiB.
MAX_BODY = 3 * 1024 * 1024
REQUEST_TIMEOUT = 10.0  # seconds for a whole request, from its first byte (a new connection's: its accept)
IDLE_TIMEOUT = 120.0  # seconds a kept-alive connection may wait for its next request
MAX_CONNECTIONS = 64  # connections served at once, a thread each
QUEUE_WAIT = 1.0  # seconds a connection over the limit waits for a place before it is closed
_LENGTH = re.compile(r"[0-9]{1,12}")


class DeadlineReader(io.RawIOBase):
    """A connection's reads, each bounded by what is left of its request's time (``deadline``, a
    :func:`time.monotonic` instant), or by the idle timeout between requests (``deadline`` None). A
    per-read timeout alone would let a client that sends a byte at a time hold the connection forever."""

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        super().__init__()
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is None:
            timeout = self.idle_timeout
        else:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(timeout)
        return self.sock.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "kiln-webhook"
    code = 0  # the HTTP status of the answer sent (0: none yet)
    server: Server

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's own file: reads go through the deadline instead
        self.reader = DeadlineReader(self.connection, self.server.idle_timeout)
        # The first request's time runs from now: the TLS handshake happens on the first read.
        self.reader.deadline = time.monotonic() + self.server.request_timeout
        self.buffered = io.BufferedReader(self.reader)
        self.rfile = self.buffered
        self.served = 0

    def handle_one_request(self) -> None:
        if self.served:  # a kept-alive connection: wait for the next request's first byte, idle
            self.reader.deadline = None
            with self.server.idle(self.connection) as evicted:
                try:
                    more = self.buffered.peek(1)
                except OSError:  # the idle timeout, a reset, or closed to make room
                    more = b""
            if not more or evicted.is_set():
                self.close_connection = True
                return
            self.reader.deadline = time.monotonic() + self.server.request_timeout
        super().handle_one_request()  # a timeout ends it with the connection closed
        self.served += 1

    def do_POST(self) -> None:
        hook = self.path.split("?", 1)[0].lstrip("/")
        if self.headers.get("Transfer-Encoding") is not None:
            return self._refuse(411, "a request body needs a Content-Length (no Transfer-Encoding)")
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not lengths:
            return self._refuse(411, "a request body needs a Content-Length")
        if len(lengths) > 1 or not _LENGTH.fullmatch(next(iter(lengths))):
            return self._refuse(400, "invalid Content-Length")
        length = int(next(iter(lengths)))
        if length > MAX_BODY:
            return self._refuse(413, f"request body over {MAX_BODY} bytes")
        if hook not in handlers.HANDLERS:
            return self._refuse(404, f"no webhook {hook}")
        self.code = 0
        metrics.WEBHOOK_IN_FLIGHT.labels(hook).inc()
        start = time.monotonic()
        try:
            self._review(hook, length)
        finally:
            metrics.WEBHOOK_IN_FLIGHT.labels(hook).dec()
            if self.code:  # an answer was sent
                metrics.WEBHOOK_LATENCY.labels(hook).observe(time.monotonic() - start)
                metrics.WEBHOOK_REQUESTS.labels(hook, str(self.code)).inc()

    def _review(self, hook: str, length: int) -> None:
        data = self.rfile.read(length)
        if len(data) < length:  # the client went away mid-body
            self.close_connection = True
            return
        try:
            body = json.loads(data)
            req = body["request"]
        except (ValueError, KeyError, TypeError):
            return self._json(400, {"error": "expected an AdmissionReview"})
        if not isinstance(req, dict):
            return self._json(400, {"error": "expected an AdmissionReview"})
        mismatch = namespace_mismatch(req)
        if mismatch:
            log.warning(f"{hook}: refused a review: {mismatch}")
            return self._json(400, {"error": mismatch})
        try:
            response = handlers.answer(hook, req)
        except Exception:
            log.exception(f"{hook}: could not answer a review")
            return self._json(500, {"error": "could not answer the review"})
        if not response["allowed"]:
            log.info(f"{hook}: denied {req.get('operation')} in {req.get('namespace')}: "
                     f"{response['status']['message']}")
        self._json(200, {"apiVersion": body.get("apiVersion", "admission.k8s.io/v1"), "kind": "AdmissionReview",
                         "response": response})

    def do_GET(self) -> None:
        if self.path == "/healthz":
            return self._send(200, b"ok", "text/plain")
        self._json(404, {"error": "not found"})

    def _refuse(self, code: int, error: str) -> None:
        """An answer before the body is read: the connection cannot carry another request after it."""
        self.close_connection = True
        self._json(code, {"error": error}, close=True)

    def _json(self, code: int, obj: Any, close: bool = False) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json", close)

    def _send(self, code: int, data: bytes, content_type: str, close: bool = False) -> None:
        self.connection.settimeout(self.server.request_timeout)  # a client that does not read is let go too
        self.code = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # no access log
        return

    def log_error(self, format: str, *args: Any) -> None:  # timeouts, malformed requests: not worth more
        log.debug(format, *args)


def namespace_mismatch(request: dict[str, Any]) -> str | None:
    """Why a review cannot be answered: its object's (or old object's) namespace is not the request's,
    which the handlers go by. None when they agree (or one of them is not given)."""
    namespace = request.get("namespace")
    for field in ("object", "oldObject"):
        obj = request.get(field)
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        theirs = meta.get("namespace") if isinstance(meta, dict) else None
        if namespace and theirs and theirs != namespace:
            return f"request.{field}.metadata.namespace {theirs!r} is not request.namespace {namespace!r}"
    return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of new connections waits for accept

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, *, max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 queue_wait: float = QUEUE_WAIT) -> None:
        self.ctx = ctx
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.queue_wait = queue_wait
        self._lock = threading.Lock()
        self._active = 0  # connection threads
        self._waiting: collections.deque[tuple[Any, Any, float]] = collections.deque()  # (socket, address, until)
        self._idle: dict[socket.socket, threading.Event] = {}  # kept-alive connections between requests, oldest first
        self._refused = 0
        self._refusal_logged = 0.0
        super().__init__(addr, Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        # Headers and body go out as two writes: without this, Nagle's algorithm holds the second
        # until the client's delayed ACK (40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake happens in the connection's own thread, on its first read.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection if there is a place; else it waits for one (a connection thread
        takes it over when its own connection ends), or, with too many waiting already, is closed."""
        with self._lock:
            if self._active < self.max_connections:
                self._active += 1
                start = True
            elif len(self._waiting) < self.max_connections:
                self._waiting.append((request, client_address, time.monotonic() + self.queue_wait))
                start = False
            else:
                self._refuse(request)
                return
        if not start:
            self._close_an_idle_connection()
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._lock:
                self._active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        while True:
            super().process_request_thread(request, client_address)  # serves and closes the connection
            with self._lock:
                nxt = self._next_waiting()
                if nxt is None:
                    self._active -= 1
                    return
            request, client_address = nxt

    def _next_waiting(self) -> tuple[Any, Any] | None:
        """(Under the lock) the oldest connection still waiting for a place; those waiting too long are closed."""
        now = time.monotonic()
        while self._waiting:
            request, addr, until = self._waiting.popleft()
            if until > now:
                return request, addr
            self._refuse(request)
        return None

    def service_actions(self) -> None:
        """Between accepts (every half second at least): close the connections that waited too long."""
        now = time.monotonic()
        with self._lock:
            while self._waiting and self._waiting[0][2] <= now:
                self._refuse(self._waiting.popleft()[0])

    def _refuse(self, request: Any) -> None:
        self._refused += 1
        self.shutdown_request(request)
        now = time.monotonic()
        if now - self._refusal_logged > 10:
            log.warning(f"closed {self._refused} connection(s) over the limit of {self.max_connections} "
                        f"served at once")
            self._refused, self._refusal_logged = 0, now

    @contextlib.contextmanager
    def idle(self, conn: socket.socket) -> Iterator[threading.Event]:
        """While a kept-alive connection waits for its next request, it may be closed to make room for
        a new one (the event is set then)."""
        evicted = threading.Event()
        with self._lock:
            self._idle[conn] = evicted
        try:
            yield evicted
        finally:
            with self._lock:
                self._idle.pop(conn, None)

    def _close_an_idle_connection(self) -> None:
        with self._lock:
            if not self._idle:
                return
            conn = next(iter(self._idle))
            self._idle.pop(conn).set()
            # The plain socket's shutdown: its thread's read ends (SSLSocket.shutdown would also drop
            # the TLS state under that thread's feet).
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            while self._waiting:
                self.shutdown_request(self._waiting.popleft()[0])

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
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                   help="connections served at once (a thread each)")
    p.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                   help="seconds a request (with a new connection's TLS handshake) may take to arrive")
    p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT,
                   help="seconds a kept-alive connection may wait for its next request")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of the /metrics endpoint (plain HTTP)")
    p.add_argument("--metrics-port", type=int, default=0, help="port of the /metrics endpoint (0: none)")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    args = p.parse_args(argv)
    logs.configure(args.log_format)
    if args.metrics_port:
        for hook in handlers.HANDLERS:  # every series exists from the start: rate() sees the first request
            metrics.WEBHOOK_REQUESTS.labels(hook, "200")
            metrics.WEBHOOK_LATENCY.labels(hook)
            metrics.WEBHOOK_IN_FLIGHT.labels(hook)
        metrics.serve(args.metrics_port, args.metrics_addr, operator=False)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    server = Server((args.addr, args.port), ctx, max_connections=args.max_connections,
                    request_timeout=args.request_timeout, idle_timeout=args.idle_timeout)
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
