"""Resolve container image tags to digests with the OCI distribution API.

At Artifact registration every container image is resolved to the digest of its manifest (or index), so that
what runs in production is ``repo@sha256:...``: the content that was registered, whatever the tag says later.

One resolution is a ``HEAD /v2/<repository>/manifests/<tag>`` (a ``GET`` when the registry sends no
``Docker-Content-Digest``), with at most one authentication round: ``Basic`` with the image pull secret's
credentials, or a ``Bearer`` token from the registry's token service. Credentials never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"\w[\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")

Credentials = Mapping[str, tuple[str, str]]
"""Registry (as :attr:`Reference.registry`) -> (username, password)."""


@dataclass(frozen=True)
class Reference:
    """A parsed image reference, normalised as docker does (``nginx`` is ``docker.io/library/nginx:latest``)."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None
    written: str = field(default="", compare=False, repr=False)  # the name as the user wrote it

    def pinned(self, digest: str) -> str:
        """The reference by digest, the tag dropped, the name kept as written: ``nginx@sha256:...``."""
        return f"{self.written or f'{self.registry}/{self.repository}'}@{digest}"


def _registry_key(name: str) -> str:
    """A registry as :attr:`Reference.registry` names it: no scheme, no path, Docker Hub as docker.io."""
    host = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", name.strip()).partition("/")[0]
    return DOCKER_HUB if host in _HUB_ALIASES else host


def parse(image: str) -> Reference:
    """Parse an image reference; ValueError saying what is wrong when it is invalid."""

    def invalid(why: str) -> ValueError:
        return ValueError(f"invalid image reference {image!r}: {why}")

    rest, at, digest = image.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise invalid(f"the digest {digest!r} is not sha256:<64 lowercase hex digits>")
    name, tag = rest, None
    if rest.rfind(":") > rest.rfind("/"):
        name, _, tag = rest.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise invalid(f"the tag {tag!r} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    first, slash, remainder = name.partition("/")
    registry, repository = DOCKER_HUB, name
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.fullmatch(first):
            raise invalid(f"the registry {first!r} is not a host name or address with an optional port")
        registry, repository = _registry_key(first), remainder
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not name or not _PATH.fullmatch(repository):
        raise invalid(f"the repository {repository!r} is not lowercase components ([a-z0-9] separated by . _ __ -"
                      " or -- ...) joined by /")
    if len(name) > 255:
        raise invalid("the name is longer than 255 characters")
    return Reference(registry, repository, tag if tag or at else "latest", digest if at else None, name)


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


@dataclass(frozen=True)
class Settings:
    """How images are resolved: which registries are never contacted, where to contact others, how long to wait."""

    skip: frozenset[str] = frozenset()  # their images keep the tag (Knative's registries-skipping-tag-resolving)
    mirrors: Mapping[str, str] = field(default_factory=dict)  # registry -> base URL to contact instead
    allow_tags: bool = False  # for the caller: when resolution fails, keep the tag instead of refusing
    timeout: float = 5.0  # seconds, for the whole resolution of one image

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """From KILN_DIGEST_SKIP_REGISTRIES ("a,b"), KILN_REGISTRY_MIRRORS ("reg=http://host:port,..."),
        KILN_DIGEST_ALLOW_TAGS ("true"/"false") and KILN_DIGEST_TIMEOUT (seconds)."""
        skip = frozenset(_registry_key(r) for r in env.get("KILN_DIGEST_SKIP_REGISTRIES", "").split(",") if r.strip())
        mirrors = {}
        for item in filter(str.strip, env.get("KILN_REGISTRY_MIRRORS", "").split(",")):
            registry, eq, url = item.partition("=")
            if not eq or not registry.strip() or not re.match(r"https?://[^/]", url.strip()):
                raise ValueError(f"KILN_REGISTRY_MIRRORS: {item!r} is not <registry>=<http(s)://host[:port]>")
            mirrors[_registry_key(registry)] = url.strip().rstrip("/")
        raw = env.get("KILN_DIGEST_TIMEOUT", "5")
        try:
            timeout = float(raw)
        except ValueError:
            timeout = 0.0
        if not 0 < timeout < float("inf"):
            raise ValueError(f"KILN_DIGEST_TIMEOUT={raw!r}: expected a positive number of seconds")
        allow = _flag("KILN_DIGEST_ALLOW_TAGS", env.get("KILN_DIGEST_ALLOW_TAGS", "false"))
        return cls(skip=skip, mirrors=mirrors, allow_tags=allow, timeout=timeout)


class ResolutionError(Exception):
    """An image could not be resolved; the message names the image, the registry and why."""


def credentials(dockerconfigjson: bytes | str) -> dict[str, tuple[str, str]]:
    """The credentials in a kubernetes.io/dockerconfigjson secret's ``.dockerconfigjson`` (``{"auths": {...}}``)
    or a kubernetes.io/dockercfg secret's ``.dockercfg`` (the map itself), keyed like :attr:`Reference.registry`."""
    try:
        config = json.loads(dockerconfigjson)
    except ValueError as e:
        raise ValueError(f"the docker config is not JSON: {e}") from None
    auths = config.get("auths", config) if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        raise ValueError("the docker config is not a JSON object of registries")
    found: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, colon, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, TypeError):
                colon = ""
            if not colon:
                raise ValueError(f"the docker config's auth for {key!r} is not base64 of <username>:<password>")
            found[_registry_key(key)] = (user, password)
        elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            found[_registry_key(key)] = (entry["username"], entry["password"])
    return found


def base_url(registry: str, settings: Settings) -> str:
    """Where a registry is contacted: its mirror; http:// for loopback, https:// otherwise; Docker Hub's API host."""
    if registry in settings.mirrors:
        return settings.mirrors[registry]
    if registry == DOCKER_HUB:
        return "https://registry-1.docker.io"
    host = registry[1:].partition("]")[0] if registry.startswith("[") else registry.partition(":")[0]
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return f"{'http' if loopback else 'https'}://{registry}"


def _errors(r: requests.Response) -> str:
    """`` (CODE: message)`` from a registry's ``{"errors": [{"code", "message"}]}`` body, or nothing."""
    try:
        errors = r.json().get("errors")
        text = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError):
        return ""
    return f" ({text})" if text else ""


def _reason(e: requests.RequestException) -> str:
    if isinstance(e, requests.Timeout):
        return "timed out"
    inner: Any = e.args[0] if e.args else e
    inner = getattr(inner, "reason", inner)  # urllib3's MaxRetryError -> NewConnectionError, SSLError, ...
    return re.sub(r"^<[^>]*>: |^\w+Connection\([^)]*\): ", "", str(inner))


class _Resolution:
    """One image's resolution: the deadline, the session, the authorization won in the one auth round."""

    def __init__(self, image: str, ref: Reference, settings: Settings, creds: Credentials | None) -> None:
        self.image, self.ref, self.settings = image, ref, settings
        self.base = base_url(ref.registry, settings)
        self.where = f"{ref.registry} (via {self.base})" if ref.registry in settings.mirrors else ref.registry
        self.creds = (creds or {}).get(ref.registry)
        self.deadline = time.monotonic() + settings.timeout
        self.session = requests.Session()
        self.authorization: str | None = None
        self.challenged = False

    def error(self, why: str) -> ResolutionError:
        return ResolutionError(f"image {self.image}: registry {self.where}{why}")

    def unauthorized(self, status: int = 401) -> ResolutionError:
        if self.creds:
            return self.error(f": unauthorized ({status}) — the credentials for {self.ref.registry} were refused")
        return self.error(f": unauthorized ({status}) — name an image pull secret with credentials for "
                          f"{self.ref.registry}")

    def send(self, method: str, url: str, what: str = "", **kwargs: Any) -> requests.Response:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.error(f"{what} unreachable: no answer within {self.settings.timeout:g}s")
        try:
            return self.session.request(method, url, timeout=left, allow_redirects=True, **kwargs)
        except requests.RequestException as e:
            raise self.error(f"{what} unreachable: {_reason(e)}") from e

    def manifest(self, method: str) -> requests.Response:
        url = f"{self.base}/v2/{self.ref.repository}/manifests/{self.ref.tag}"
        r = self.send(method, url, headers=self.headers())
        if r.status_code == 401 and not self.challenged:
            self.challenged = True
            self.authorize(r.headers.get("WWW-Authenticate", ""))
            r = self.send(method, url, headers=self.headers())
        if r.status_code == 401:
            raise self.unauthorized()
        return r

    def headers(self) -> dict[str, str]:
        return {"Accept": ACCEPT, **({"Authorization": self.authorization} if self.authorization else {})}

    def authorize(self, challenge: str) -> None:
        scheme, _, rest = challenge.strip().partition(" ")
        params = {k.lower(): v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', rest)}
        if scheme.lower() == "basic" and self.creds:
            user, password = self.creds
            self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        elif scheme.lower() == "bearer" and params.get("realm"):
            self.authorization = f"Bearer {self.token(params)}"
        else:
            raise self.unauthorized()

    def token(self, challenge: dict[str, str]) -> str:
        realm = challenge["realm"]
        query = {"scope": f"repository:{self.ref.repository}:pull"}
        if challenge.get("service"):
            query["service"] = challenge["service"]
        what = f": token service {realm}"
        r = self.send("GET", realm, what, params=query, auth=self.creds)
        if r.status_code in (401, 403):
            raise self.unauthorized(r.status_code)
        if not 200 <= r.status_code < 300:
            raise self.error(f"{what} answered {r.status_code}{_errors(r)}")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise self.error(f"{what} answered no token")
        return token

    def run(self) -> str:
        r = self.manifest("HEAD")
        digest = r.headers.get("Docker-Content-Digest") if 200 <= r.status_code < 300 else None
        if not digest:  # no digest header, or an error whose body (which HEAD has not) says what it is
            r = self.manifest("GET")
            if not 200 <= r.status_code < 300:
                raise self.error(f" answered {r.status_code}{_errors(r)} for {self.ref.repository}:{self.ref.tag}")
            digest = f"sha256:{hashlib.sha256(r.content).hexdigest()}"
        if not _DIGEST.fullmatch(digest):
            raise self.error(f" answered an invalid digest {digest[:100]!r}")
        return digest


def resolve(image: str, settings: Settings, creds: Credentials | None = None) -> str | None:
    """The digest (``sha256:<hex>``) the image's tag points at: the reference's own digest when it has one and None
    when its registry is in ``settings.skip`` (neither contacts anything). ResolutionError when it cannot be
    resolved, an invalid reference included; whether to keep the tag then (``settings.allow_tags``) is the caller's."""
    try:
        ref = parse(image)
    except ValueError as e:
        raise ResolutionError(f"image {image}: {e}") from e
    if ref.digest:
        return ref.digest
    if ref.registry in settings.skip:
        return None
    resolution = _Resolution(image, ref, settings, creds)
    with resolution.session:
        return resolution.run()
