"""The admission webhook server as a process: TLS, answers, certificate renewal, parent death."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme
from tests.kube import Kube

from kiln.admission.process import free_port, listening
from kiln.admission.server import MAX_BODY


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


def start_server(d: Path, *args: str) -> tuple[trustme.CA, subprocess.Popen[bytes], int]:
    ca = trustme.CA()
    write_cert(ca, d)
    ca.cert_pem.write_to_path(str(d / "ca.crt"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kiln.admission.server", f"--port={port}",
                             f"--cert={d / 'tls.crt'}", f"--key={d / 'tls.key'}", *args])
    Kube.wait(lambda: listening(port), what="webhook server listening", timeout=30)
    return ca, proc, port


@pytest.fixture
def server(tmp_path: Path) -> Any:
    ca, proc, port = start_server(tmp_path, "--reload-interval=0.2")
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


# --- what a client can hold of the server: time, threads, memory -------------------------------------


def artifact(ns: str | None = "ns", description: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "a", "annotations": {"note": description}}
    if ns is not None:
        meta["namespace"] = ns
    return {"apiVersion": "kiln.dev/v1alpha1", "kind": "Artifact", "metadata": meta,
            "spec": {"lifecycle": "Registered", "containers": [{"name": "app", "image": "x:1"}]}}


def review_of(obj: dict[str, Any], old: dict[str, Any] | None = None, namespace: str = "ns") -> bytes:
    """An UPDATE of a Registered artifact that changes nothing locked: allowed."""
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "operation": "UPDATE", "name": "a", "namespace": namespace, "object": obj,
        "oldObject": old if old is not None else obj, "userInfo": {"username": "alice"}}}).encode()


def tls(port: int, d: Path, timeout: float = 10) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")


def request(body: bytes, *headers: str, path: str = "/validate-artifact") -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def exchange(port: int, d: Path, data: bytes) -> tuple[int, dict[str, Any], bool]:
    """One raw request on a new connection: the status, the JSON answer, whether the server closes."""
    with tls(port, d) as s:
        s.sendall(data)
        r = http.client.HTTPResponse(s)  # type: ignore[arg-type]
        r.begin()
        return r.status, json.loads(r.read()), r.will_close


def post(conn: http.client.HTTPSConnection, body: bytes) -> dict[str, Any]:
    conn.request("POST", "/validate-artifact", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    return dict(json.loads(r.read())["response"])


def keep_alive(port: int, d: Path) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=ssl.create_default_context(cafile=str(d / "ca.crt")))


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


class Slow:
    """A client that trickles ``data`` a byte at a time (after ``prefix`` at once) and notes when the
    server cuts it off. ``tls=False``: a TCP connection that never starts its TLS handshake."""

    def __init__(self, port: int, d: Path, data: bytes = b"", prefix: bytes = b"", use_tls: bool = True,
                 every: float = 0.2) -> None:
        self.started = time.monotonic()
        sock = tls(port, d) if use_tls else socket.create_connection(("127.0.0.1", port))
        sock.settimeout(every)  # the pace of the trickle: each wait for the server's close is this long
        self.sock = sock
        self.cut_at: float | None = None
        if prefix:
            sock.sendall(prefix)
        self.thread = threading.Thread(target=self._trickle, args=(data,), daemon=True)
        self.thread.start()

    def _trickle(self, data: bytes, give_up: float = 30) -> None:
        i = 0
        while time.monotonic() < self.started + give_up:
            try:
                if not self.sock.recv(1):  # nothing comes back but the end of the connection
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            if data:
                try:
                    self.sock.send(data[i % len(data):i % len(data) + 1])
                except OSError:
                    break
                i += 1
        self.cut_at = time.monotonic()

    @property
    def held(self) -> float | None:
        """For how long the server kept the connection (None: it still does)."""
        return None if self.cut_at is None else self.cut_at - self.started

    def close(self) -> None:
        self.sock.close()


def test_slow_clients_are_cut_off_while_reviews_are_answered(server: Any) -> None:
    """A client gets 10 s for a request, however slowly it sends it (on a new connection: for its TLS
    handshake too); a kept-alive connection waits longer than that between requests."""
    _, d, port = server
    conn = keep_alive(port, d)
    assert post(conn, review_of(artifact()))["allowed"] is True
    first = conn.sock
    slow = [
        Slow(port, d, use_tls=False),  # TCP, no handshake
        Slow(port, d),  # a handshake, then nothing
        Slow(port, d, prefix=b"POST /validate-artifact HTTP/1.1\r\n", data=b"X-Pad: aaaaaaaa\r\n"),  # headers
        Slow(port, d, prefix=request(b"", "Content-Length: 100000"), data=b"{"),  # the body
    ]
    try:
        # Meanwhile, reviews are answered at once, on new connections.
        for _ in range(3):
            t = time.monotonic()
            status, answer, _ = exchange(port, d, request(review_of(artifact()), "Content-Length: "
                                                          f"{len(review_of(artifact()))}"))
            assert status == 200 and answer["response"]["allowed"] is True
            assert time.monotonic() - t < 2
        Kube.wait(lambda: all(c.held is not None for c in slow), what="the slow clients cut off", timeout=20)
        for c in slow:
            assert c.held is not None and 9 <= c.held <= 13, [c.held for c in slow]
        # The kept-alive connection was idle all that time, and serves the next review.
        assert post(conn, review_of(artifact()))["allowed"] is True
        assert conn.sock is first
    finally:
        conn.close()
        for c in slow:
            c.close()


def test_connections_beyond_the_limit_get_no_thread(tmp_path: Path) -> None:
    """With every place taken by a slow client, new connections are closed within about a second
    (no thread each); once the slow ones are cut off, reviews are answered again."""
    _, proc, port = start_server(tmp_path, "--max-connections=4", "--request-timeout=5")
    try:
        base = threads(proc.pid)
        hold = [Slow(port, tmp_path, prefix=b"POST /validate-artifact HTTP/1.1\r\n")
                for _ in range(4)]  # each handshake done: a thread serves each
        Kube.wait(lambda: threads(proc.pid) >= base + 4, what="a thread per slow client", timeout=15)
        t = time.monotonic()
        extra = [Slow(port, tmp_path, use_tls=False, every=0.05) for _ in range(12)]
        seen = 0

        def all_closed() -> bool:
            nonlocal seen
            seen = max(seen, threads(proc.pid))
            return all(c.held is not None for c in extra)

        Kube.wait(all_closed, what="the connections over the limit closed", timeout=4, interval=0.02)
        assert time.monotonic() - t < 2.5
        assert seen <= base + 4 and threads(proc.pid) <= base + 4
        assert all(c.held is None for c in hold)  # still held
        Kube.wait(lambda: all(c.held is not None for c in hold), what="the slow clients cut off", timeout=8)
        body = review_of(artifact())
        status, answer, _ = exchange(port, tmp_path, request(body, f"Content-Length: {len(body)}"))
        assert status == 200 and answer["response"]["allowed"] is True
        for c in hold + extra:
            c.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_idle_connection_makes_room_for_a_new_one(tmp_path: Path) -> None:
    """At the limit, a kept-alive connection waiting for its next request is closed for a new one."""
    _, proc, port = start_server(tmp_path, "--max-connections=2")
    idle = keep_alive(port, tmp_path)
    hold = Slow(port, tmp_path, prefix=b"POST /validate-artifact HTTP/1.1\r\n")
    try:
        assert post(idle, review_of(artifact()))["allowed"] is True
        body = review_of(artifact())
        t = time.monotonic()
        status, answer, _ = exchange(port, tmp_path, request(body, f"Content-Length: {len(body)}"))
        assert status == 200 and answer["response"]["allowed"] is True and time.monotonic() - t < 1
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
            post(idle, body)
        assert hold.held is None
    finally:
        idle.close()
        hold.close()
        proc.terminate()
        proc.wait(10)


def test_bodies_need_a_content_length_within_the_limit(server: Any) -> None:
    _, d, port = server
    body = review_of(artifact())
    assert MAX_BODY == 3 * 1024 * 1024
    for headers, code in [((), 411), (("Transfer-Encoding: chunked",), 411),
                          (("Content-Length: 12abc",), 400), (("Content-Length: -1",), 400),
                          ((f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"), 400)]:
        status, answer, closes = exchange(port, d, request(body, *headers))
        assert (status, closes) == (code, True), headers
        assert "error" in answer
    # Refused from the headers alone: the body is never read.
    status, answer, closes = exchange(port, d, request(b"", f"Content-Length: {MAX_BODY + 1}"))
    assert (status, closes) == (413, True) and str(MAX_BODY) in answer["error"]
    # An object near etcd's limit, with its old version: answered.
    big = review_of(artifact(description="x" * 1_400_000), artifact(description="y" * 1_400_000))
    assert len(big) < MAX_BODY
    status, answer, closes = exchange(port, d, request(big, f"Content-Length: {len(big)}"))
    assert status == 200 and answer["response"]["allowed"] is True and not closes


def test_a_review_whose_object_is_in_another_namespace_is_refused(server: Any) -> None:
    """The handlers go by request.namespace: an object (or old object) of another namespace is not
    reviewed at all."""
    _, d, port = server
    for obj, old in [(artifact("other"), artifact()), (artifact(), artifact("other"))]:
        body = review_of(obj, old)
        status, answer, closes = exchange(port, d, request(body, f"Content-Length: {len(body)}"))
        assert status == 400 and not closes
        assert "'other' is not request.namespace 'ns'" in answer["error"]
    for obj, old in [(artifact(), artifact()), (artifact(None), artifact(None))]:
        body = review_of(obj, old)
        status, answer, _ = exchange(port, d, request(body, f"Content-Length: {len(body)}"))
        assert status == 200 and answer["response"]["allowed"] is True
