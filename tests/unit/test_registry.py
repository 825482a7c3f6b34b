"""kiln.registry: image references, settings, pull secrets, and tags resolved to digests by real registries.

The registries are distribution's docker-registry (the Debian package) on 127.0.0.1: plain, with htpasswd (Basic)
auth, and with token (Bearer) auth whose token service is a small JWT issuer here, signing with a trustme key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import bcrypt
import pytest
import requests
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kiln.registry import Reference, ResolutionError, Settings, credentials, parse, resolve

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
USER, PASSWORD = "kiln", "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


# --- references, settings, pull secrets ------------------------------------------------------------------------

DIGEST = sha256(b"x")


@pytest.mark.parametrize(("image", "expected"), [
    ("nginx", Reference("docker.io", "library/nginx", "latest", None)),
    ("nginx:1.25", Reference("docker.io", "library/nginx", "1.25", None)),
    ("bitnami/redis:7", Reference("docker.io", "bitnami/redis", "7", None)),
    ("docker.io/nginx", Reference("docker.io", "library/nginx", "latest", None)),
    ("index.docker.io/library/nginx:1", Reference("docker.io", "library/nginx", "1", None)),
    ("127.0.0.1:5001/kiln/scorer:v1", Reference("127.0.0.1:5001", "kiln/scorer", "v1", None)),
    ("localhost/kiln/scorer", Reference("localhost", "kiln/scorer", "latest", None)),
    ("localhost:5000/a", Reference("localhost:5000", "a", "latest", None)),
    ("[::1]:5000/a/b:c", Reference("[::1]:5000", "a/b", "c", None)),
    ("ghcr.io/org/team/app_x.y-z:v1.2_3", Reference("ghcr.io", "org/team/app_x.y-z", "v1.2_3", None)),
    (f"ghcr.io/x/y@{DIGEST}", Reference("ghcr.io", "x/y", None, DIGEST)),
    (f"nginx:1.25@{DIGEST}", Reference("docker.io", "library/nginx", "1.25", DIGEST)),
])
def test_parse_normalises_like_docker(image: str, expected: Reference) -> None:
    assert parse(image) == expected


@pytest.mark.parametrize(("image", "why"), [
    ("", "repository"),
    ("Nginx", "repository"),
    ("ghcr.io/Org/app", "repository"),
    ("nginx:", "tag"),
    ("nginx:-x", "tag"),
    ("nginx:" + "t" * 129, "tag"),
    ("nginx@sha256:abc", "digest"),
    (f"nginx@{DIGEST.upper()}", "digest"),
    ("ghcr.io/", "repository"),
    ("ghcr.io//app", "repository"),
    ("a..b/c", "registry"),
    ("ghcr.io/app:1:2", "repository"),
    ("a/" + "b" * 260, "255"),
])
def test_parse_refuses_invalid_references_saying_why(image: str, why: str) -> None:
    with pytest.raises(ValueError, match="invalid image reference") as e:
        parse(image)
    assert why in str(e.value)


def test_pinned_drops_the_tag_and_keeps_the_name_as_written() -> None:
    assert parse("nginx").pinned(DIGEST) == f"nginx@{DIGEST}"
    assert parse("nginx:1.25").pinned(DIGEST) == f"nginx@{DIGEST}"
    assert parse("127.0.0.1:5001/kiln/scorer:v1").pinned(DIGEST) == f"127.0.0.1:5001/kiln/scorer@{DIGEST}"
    assert parse(f"ghcr.io/x/y:1@{sha256(b'old')}").pinned(DIGEST) == f"ghcr.io/x/y@{DIGEST}"
    assert Reference("docker.io", "library/nginx", "1", None).pinned(DIGEST) == f"docker.io/library/nginx@{DIGEST}"


def test_settings_from_the_environment() -> None:
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env({
        "KILN_DIGEST_SKIP_REGISTRIES": "kind.local, index.docker.io,,",
        "KILN_REGISTRY_MIRRORS": "127.0.0.1:5001=http://127.0.0.1:5003/, x=https://y",
        "KILN_DIGEST_ALLOW_TAGS": "true",
        "KILN_DIGEST_TIMEOUT": "2.5"})
    assert s == Settings(skip=frozenset({"kind.local", "docker.io"}),
                         mirrors={"127.0.0.1:5001": "http://127.0.0.1:5003", "x": "https://y"},
                         allow_tags=True, timeout=2.5)
    assert Settings.from_env({"KILN_DIGEST_ALLOW_TAGS": "false"}).allow_tags is False


@pytest.mark.parametrize(("env", "message"), [
    ({"KILN_DIGEST_ALLOW_TAGS": "maybe"}, "KILN_DIGEST_ALLOW_TAGS"),
    ({"KILN_DIGEST_TIMEOUT": "0"}, "KILN_DIGEST_TIMEOUT"),
    ({"KILN_DIGEST_TIMEOUT": "soon"}, "KILN_DIGEST_TIMEOUT"),
    ({"KILN_REGISTRY_MIRRORS": "127.0.0.1:5001"}, "KILN_REGISTRY_MIRRORS"),
    ({"KILN_REGISTRY_MIRRORS": "a=127.0.0.1:5003"}, "KILN_REGISTRY_MIRRORS"),
])
def test_settings_refuse_invalid_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_credentials_from_both_secret_formats() -> None:
    dockerconfigjson = json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hub:pw:with:colons")},
        "ghcr.io": {"username": "gh", "password": "tok"},
        "http://127.0.0.1:5001/some/path": {"auth": b64("local:pw")},
        "no-secret.example": {"email": "x@example.com"}}}).encode()
    assert credentials(dockerconfigjson) == {
        "docker.io": ("hub", "pw:with:colons"), "ghcr.io": ("gh", "tok"), "127.0.0.1:5001": ("local", "pw")}
    dockercfg = json.dumps({"registry-1.docker.io": {"auth": b64("u:p")}, "quay.io": {"auth": b64("q:r")}})
    assert credentials(dockercfg) == {"docker.io": ("u", "p"), "quay.io": ("q", "r")}


@pytest.mark.parametrize("config", ["not json", "[]", '{"auths": []}', '{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}',
                                    '{"auths": {"r.io": {"auth": "%%%"}}}'])
def test_credentials_refuse_a_broken_secret(config: str) -> None:
    with pytest.raises(ValueError, match="docker config"):
        credentials(config)


# --- real registries -------------------------------------------------------------------------------------------

def wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)  # polling with a deadline, not a synchronisation
    raise TimeoutError(f"{what} not ready within {timeout}s: {log.read_text()[-2000:]}")



@contextlib.contextmanager
def docker_registry(d: Path, auth: dict[str, Any] | None = None) -> Iterator[str]:
    """distribution's registry on 127.0.0.1 (only) at a free port, storing in d; its base URL."""
    port = free_port()
    config: dict[str, Any] = {"version": 0.1, "log": {"level": "info"},
                              "storage": {"filesystem": {"rootdirectory": str(d / "data")}},
                              "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex}}
    if auth:
        config["auth"] = auth
    (d / "config.yml").write_text(json.dumps(config))
    log = d / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/v2/", timeout=2).status_code in (200, 401), "docker-registry", proc,
                   log)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An http.server on 127.0.0.1 in a thread; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


Auth = tuple[str, str] | Bearer | None


def push_blob(url: str, repo: str, data: bytes, auth: Auth) -> dict[str, Any]:
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", auth=auth, timeout=10)
    assert r.status_code == 202, r.text
    location = urljoin(url, r.headers["Location"])
    r = requests.put(f"{location}{'&' if '?' in location else '?'}digest={sha256(data)}", data=data, auth=auth,
                     headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert r.status_code == 201, r.text
    return {"digest": sha256(data), "size": len(data)}


def push_manifest(url: str, repo: str, ref: str, manifest: dict[str, Any], auth: Auth = None) -> dict[str, Any]:
    """PUT a manifest (pretty-printed: the digest is of these bytes, not of some canonical form); its descriptor."""
    body = json.dumps(manifest, indent=2).encode()
    r = requests.put(f"{url}/v2/{repo}/manifests/{ref}", data=body, auth=auth, timeout=10,
                     headers={"Content-Type": manifest["mediaType"]})
    assert r.status_code == 201, r.text
    return {"mediaType": manifest["mediaType"], "digest": sha256(body), "size": len(body)}


def push_image(url: str, repo: str, tag: str, version: str = "1", auth: Auth = None) -> dict[str, Any]:
    """A small OCI image (a config and a layer) under repo:tag; the manifest's descriptor."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"version": version}},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    return push_manifest(url, repo, tag, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **push_blob(url, repo, config, auth)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **push_blob(url, repo, f"layer {version}".encode(), auth)}],
        "annotations": {"dev.kiln.test/version": version}}, auth)


def new_repo(prefix: str = "kiln") -> str:
    return f"{prefix}/app-{uuid.uuid4().hex[:8]}"


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there (bound, then released)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with docker_registry(tmp_path_factory.mktemp("plain")) as url:
        yield url


def test_resolve_gives_the_digest_of_the_manifest_pushed_and_follows_the_tag(plain: str) -> None:
    host, repo = urlsplit(plain).netloc, new_repo()
    v1 = push_image(plain, repo, "v1", "1")["digest"]
    assert resolve(f"{host}/{repo}:v1", Settings()) == v1
    v2 = push_image(plain, repo, "v1", "2")["digest"]
    assert v2 != v1
    assert resolve(f"{host}/{repo}:v1", Settings()) == v2
    latest = push_image(plain, repo, "latest", "3")["digest"]
    assert resolve(f"{host}/{repo}", Settings()) == latest  # no tag is :latest


def test_an_unknown_tag_or_repository_is_an_error_naming_the_image_the_registry_and_why(plain: str) -> None:
    host, repo = urlsplit(plain).netloc, new_repo()
    push_image(plain, repo, "v1")
    with pytest.raises(ResolutionError) as e:
        resolve(f"{host}/{repo}:v9", Settings())
    assert str(e.value) == (f"image {host}/{repo}:v9: registry {host} answered 404 (MANIFEST_UNKNOWN: manifest unknown)"
                            f" for {repo}:v9")
    with pytest.raises(ResolutionError, match=f"registry {host} answered 404 "):  # distribution 2.8: MANIFEST_UNKNOWN
        resolve(f"{host}/kiln/never-pushed:v1", Settings())


def test_an_image_index_resolves_to_the_digest_of_the_index(plain: str) -> None:
    host, repo = urlsplit(plain).netloc, new_repo()
    amd64, arm64 = push_image(plain, repo, "amd64", "amd64"), push_image(plain, repo, "arm64", "arm64")
    index = push_manifest(plain, repo, "v1", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**amd64, "platform": {"architecture": "amd64", "os": "linux"}},
        {**arm64, "platform": {"architecture": "arm64", "os": "linux"}}]})
    assert resolve(f"{host}/{repo}:v1", Settings()) == index["digest"] not in (amd64["digest"], arm64["digest"])


def test_a_mirror_is_contacted_instead_of_the_registry_named(plain: str) -> None:
    repo = new_repo()
    digest = push_image(plain, repo, "v1")["digest"]
    settings = Settings(mirrors={"127.0.0.1:5001": plain})
    assert resolve(f"127.0.0.1:5001/{repo}:v1", settings) == digest
    with pytest.raises(ResolutionError) as e:
        resolve(f"127.0.0.1:5001/{repo}:v2", settings)
    assert str(e.value).startswith(
        f"image 127.0.0.1:5001/{repo}:v2: registry 127.0.0.1:5001 (via {plain}) answered 404 (MANIFEST_UNKNOWN: ")
    # Docker Hub names, normalised: "nginx-<x>" is docker.io/library/nginx-<x>
    name = f"nginx-{uuid.uuid4().hex[:8]}"
    hub = push_image(plain, f"library/{name}", "1.25")["digest"]
    assert resolve(f"{name}:1.25", Settings(mirrors={"docker.io": plain})) == hub


def test_registries_in_skip_are_never_contacted() -> None:
    mirrors = {"registry.internal:5000": closed_port_url()}
    image = "registry.internal:5000/kiln/scorer:v1"
    assert resolve(image, Settings(skip=frozenset({"registry.internal:5000"}), mirrors=mirrors)) is None
    with pytest.raises(ResolutionError, match="unreachable"):  # not skipped, the same image is looked up
        resolve(image, Settings(mirrors=mirrors))


def test_a_digest_reference_is_its_own_digest_without_contact() -> None:
    mirrors = {"127.0.0.1:5001": closed_port_url()}
    assert resolve(f"127.0.0.1:5001/kiln/scorer:v1@{DIGEST}", Settings(mirrors=mirrors)) == DIGEST
    assert resolve(f"127.0.0.1:5001/kiln/scorer@{DIGEST}", Settings(mirrors=mirrors)) == DIGEST
    with pytest.raises(ResolutionError) as e:
        resolve("127.0.0.1:5001/kiln/scorer:v1", Settings(mirrors=mirrors))
    assert str(e.value).startswith(f"image 127.0.0.1:5001/kiln/scorer:v1: registry 127.0.0.1:5001 (via "
                                   f"{mirrors['127.0.0.1:5001']}) unreachable: "), str(e.value)
    assert "refused" in str(e.value)


def test_an_invalid_reference_is_a_resolution_error() -> None:
    with pytest.raises(ResolutionError, match="image Nginx:1: invalid image reference"):
        resolve("Nginx:1", Settings())


def test_the_timeout_bounds_the_whole_resolution() -> None:
    with socket.socket() as s:  # the kernel accepts connections; nothing ever answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        settings = Settings(mirrors={"slow.example": f"http://127.0.0.1:{s.getsockname()[1]}"}, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(ResolutionError, match=r"^image slow.example/a:1: registry slow.example \(via .*\) "
                                                  r"unreachable: timed out"):
            resolve("slow.example/a:1", settings)
        assert 0.4 < time.monotonic() - start < 2


def test_without_a_digest_header_the_digest_is_of_the_manifest_fetched() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}, indent=3).encode()
    seen: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):  # a registry that sends no Docker-Content-Digest
        def answer(self, send_body: bool) -> None:
            seen.append((self.command, self.path, self.headers.get("Accept", "")))
            self.send_response(200)
            self.send_header("Content-Type", OCI_MANIFEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.answer(False)

        def do_GET(self) -> None:
            self.answer(True)

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Handler) as url:
        assert resolve("bare.example/kiln/app:v1", Settings(mirrors={"bare.example": url})) == sha256(body)
    assert [(m, p) for m, p, _ in seen] == [("HEAD", "/v2/kiln/app/manifests/v1"), ("GET", "/v2/kiln/app/manifests/v1")]
    assert [a.strip() for a in seen[0][2].split(",")] == [
        OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json", OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.v2+json"]


# --- authentication --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry with htpasswd (Basic) authentication, over plain HTTP on 127.0.0.1."""
    d = tmp_path_factory.mktemp("basic")
    (d / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    with docker_registry(d, {"htpasswd": {"realm": "kiln", "path": str(d / "htpasswd")}}) as url:
        yield url


def test_basic_auth_with_the_credentials_of_an_image_pull_secret(basic: str) -> None:
    host, repo = urlsplit(basic).netloc, new_repo()
    digest = push_image(basic, repo, "v1", auth=(USER, PASSWORD))["digest"]
    image = f"{host}/{repo}:v1"
    with pytest.raises(ResolutionError) as e:
        resolve(image, Settings())
    assert str(e.value) == (f"image {image}: registry {host}: unauthorized (401) — name an image pull secret with "
                            f"credentials for {host}")
    secret = json.dumps({"auths": {f"http://{host}/v2/": {"auth": b64(f"{USER}:{PASSWORD}")}}})
    assert resolve(image, Settings(), credentials(secret)) == digest
    with pytest.raises(ResolutionError, match="unauthorized") as e:
        resolve(image, Settings(), {host: (USER, "wrong-password")})
    assert "wrong-password" not in str(e.value) and f"credentials for {host} were refused" in str(e.value)
    with pytest.raises(ResolutionError, match="name an image pull secret"):
        resolve(image, Settings(), {"other.example": (USER, PASSWORD)})  # credentials for another registry


SERVICE, ISSUER = "kiln-test-registry", "kiln-test-token-issuer"


def jose(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    """A registry token service (docs.docker.com/registry/spec/auth/token): ES256 JWTs whose x5c chains to the
    registry's rootcertbundle. USER/PASSWORD get what they ask, except repositories under secret/; anonymous
    callers get pull on public/ (as access_token, the OAuth2 spelling); the rest is refused."""

    key: ec.EllipticCurvePrivateKey
    x5c: list[str]
    seen: list[dict[str, Any]]

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": self.x5c}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "iat": now, "nbf": now - 10, "exp": now + 300,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{jose(json.dumps(header).encode())}.{jose(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{jose(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                user: str | None = None
                if self.headers.get("Authorization", "").startswith("Basic "):
                    given = base64.b64decode(self.headers["Authorization"][6:]).decode()
                    user = USER if given == f"{USER}:{PASSWORD}" else "!refused"
                service.seen.append({"path": url.path, "query": query, "user": user})
                access: list[dict[str, Any]] = [
                    {"type": kind, "name": name, "actions": actions.split(",")}
                    for kind, name, actions in (scope.split(":") for scope in query.get("scope", []))]
                if user == USER:
                    answer = {"token": service.sign(USER, [a for a in access if not a["name"].startswith("secret/")])}
                elif user is None and all(a["name"].startswith("public/") and a["actions"] == ["pull"]
                                          for a in access):
                    answer = {"access_token": service.sign("", access)}
                else:
                    return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "who are you?"}]})
                self.reply(200, answer)

            def reply(self, status: int, answer: dict[str, Any]) -> None:
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenService]]:
    """A registry with token (Bearer) authentication and its token service."""
    d = tmp_path_factory.mktemp("token")
    ca = trustme.CA()
    signer = ca.issue_cert("kiln-token-signer")
    ca.cert_pem.write_to_path(str(d / "root.pem"))
    key = serialization.load_pem_private_key(signer.private_key_pem.bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = x509.load_pem_x509_certificate(signer.cert_chain_pems[0].bytes())
    tokens = TokenService(key, [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()], [])
    auth = {"token": {"realm": "", "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(d / "root.pem")}}
    with serve(tokens.handler()) as realm:
        auth["token"]["realm"] = f"{realm}/token"
        with docker_registry(d, auth) as url:
            yield url, tokens


def test_bearer_tokens_from_the_registry_token_service(token: tuple[str, TokenService]) -> None:
    url, tokens = token
    host, repo = urlsplit(url).netloc, new_repo()
    push = Bearer(tokens.sign(USER, [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]))
    digest = push_image(url, repo, "v1", auth=push)["digest"]
    image = f"{host}/{repo}:v1"
    tokens.seen.clear()
    assert resolve(image, Settings(), {host: (USER, PASSWORD)}) == digest
    assert tokens.seen == [{"path": "/token", "query": {"service": [SERVICE], "scope": [f"repository:{repo}:pull"]},
                            "user": USER}]
    with pytest.raises(ResolutionError) as e:
        resolve(image, Settings())
    assert str(e.value) == (f"image {image}: registry {host}: unauthorized (401) — name an image pull secret with "
                            f"credentials for {host}")
    with pytest.raises(ResolutionError, match="unauthorized") as e:
        resolve(image, Settings(), {host: (USER, "wrong-password")})
    assert "wrong-password" not in str(e.value)


def test_an_anonymous_bearer_token_for_a_public_repository(token: tuple[str, TokenService]) -> None:
    url, tokens = token
    host, repo = urlsplit(url).netloc, new_repo("public")
    push = Bearer(tokens.sign(USER, [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]))
    digest = push_image(url, repo, "v1", auth=push)["digest"]
    tokens.seen.clear()
    assert resolve(f"{host}/{repo}:v1", Settings()) == digest
    assert [s["user"] for s in tokens.seen] == [None]


def test_one_auth_round_only(token: tuple[str, TokenService]) -> None:
    """A token without the access asked for is answered 401 again: no second round, one token request."""
    url, tokens = token
    host, repo = urlsplit(url).netloc, new_repo("secret")
    push_image(url, repo, "v1", auth=Bearer(tokens.sign(USER, [
        {"type": "repository", "name": repo, "actions": ["pull", "push"]}])))
    tokens.seen.clear()
    with pytest.raises(ResolutionError, match="unauthorized"):
        resolve(f"{host}/{repo}:v1", Settings(), {host: (USER, PASSWORD)})
    assert len(tokens.seen) == 1


def test_kiln_run_refuses_to_start_with_bad_registration_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook server reads the settings at each registration: `kiln run` checks them first."""
    from kiln import main

    monkeypatch.setenv("KILN_DIGEST_ALLOW_TAGS", "maybe")
    with pytest.raises(SystemExit, match="KILN_DIGEST_ALLOW_TAGS='maybe': expected true or false"):
        main.run([], webhooks=False)
