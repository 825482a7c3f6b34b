"""Container images without Docker: built with buildah from the project's own Dockerfiles, cached by
content, and pushed to the local cluster's registry.

- ``base``: Debian bookworm with python3, made by ``mmdebstrap`` from Debian's packages. It stands in
  for the public ``python:3.11-slim-bookworm`` that the Dockerfiles default to (no public image
  registry is reachable here); it is passed to them as the ``BASE_IMAGE`` build argument.
- ``pause``: the pod sandbox's image, the ``pause`` binary that ``hack/build-control-plane.sh``
  compiles from Kubernetes' source.
- ``operator``: the project's ``Dockerfile``.
- ``scorer``: the tutorial's model server (``examples/scorer``), in three versions, ``v1``, ``v2`` and ``v3``.

Each image is tagged in buildah's storage (``$KILN_CACHE/images``) with a key computed from its
inputs: files, build arguments and base; an image whose key is there already is not built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "127.0.0.1:5001"  # as pods see it (kiln_dev.node.REGISTRY_PORT)
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
PAUSE_TAG = "3.10.2"

# No intermediate layer cache (--layers): buildah 1.28 reuses a layer across different values of a build
# argument (scorer v2 came out as v1). Whole images are cached by their content key instead.
BUILD_FLAGS = ("--quiet", "--isolation", "chroot", "--network", "host", "--layers=false")


def log(msg: str) -> None:
    print(f"[kiln images] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CACHE") or Path.home() / ".cache" / "kiln") / "images"


def buildah(*args: str, capture: bool = True) -> str:
    d = cache_dir()
    argv = ["buildah", "--root", str(d / "storage"), "--runroot", str(d / "run"), "--storage-driver", "overlay",
            *args]
    r = subprocess.run(argv, text=True, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if r.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed ({r.returncode}):\n{(r.stderr or '')[-3000:]}")
    return (r.stdout or "").strip()


@dataclass(frozen=True)
class Image:
    name: str  # the repository, under kiln/
    tags: tuple[str, ...] = ()  # pushed as these tags too, besides the content key
    dockerfile: str = ""  # relative to the repository; empty: built by code here
    context: str = "."
    inputs: tuple[str, ...] = ()  # files and directories whose content makes the key
    build_args: tuple[tuple[str, str], ...] = ()

    @property
    def local(self) -> str:
        return f"localhost/kiln/{self.name}"


BASE = Image("debian-python")
PAUSE = Image("pause", tags=(PAUSE_TAG,))
OPERATOR = Image("operator", tags=("dev",), dockerfile="Dockerfile",
                 inputs=("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "crds", "operator"))
SCORER_V1 = Image("scorer", tags=("v1",), dockerfile="examples/scorer/Dockerfile", context="examples/scorer",
                  inputs=("examples/scorer",), build_args=(("VERSION", "v1"),))
SCORER_V2 = Image("scorer", tags=("v2",), dockerfile="examples/scorer/Dockerfile", context="examples/scorer",
                  inputs=("examples/scorer",), build_args=(("VERSION", "v2"),))
SCORER_V3 = Image("scorer", tags=("v3",), dockerfile="examples/scorer/Dockerfile", context="examples/scorer",
                  inputs=("examples/scorer",), build_args=(("VERSION", "v3"),))
IMAGES = (PAUSE, OPERATOR, SCORER_V1, SCORER_V2, SCORER_V3)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def content_key(image: Image, extra: str = "") -> str:
    """A short hash of everything the image is built from."""
    h = hashlib.sha256()
    h.update(json.dumps([image.name, image.dockerfile, image.context, list(image.build_args), extra,
                         BUILD_FLAGS]).encode())
    for inp in image.inputs:
        for f in _files(REPO_ROOT / inp):
            h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _exists(ref: str) -> bool:
    try:
        buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
        return True
    except RuntimeError:
        return False


def _image_id(ref: str) -> str:
    return buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)


def base_ref() -> str:
    key = hashlib.sha256(json.dumps([DEBIAN_SUITE, DEBIAN_MIRROR, BASE_PACKAGES]).encode()).hexdigest()[:16]
    return f"{BASE.local}:{DEBIAN_SUITE}-{key}"


def pause_ref(bindir: Path) -> str:
    return f"{PAUSE.local}:{hashlib.sha256((bindir / 'pause').read_bytes()).hexdigest()[:16]}"


def build_base() -> str:
    ref = base_ref()
    if _exists(ref):
        return ref
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed: `make setup` as root installs it")
    log(f"building {ref} with mmdebstrap ({', '.join(BASE_PACKAGES)}; about a minute)")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        tar = Path(tmp) / "rootfs.tar"
        excludes = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")]
        r = subprocess.run(["mmdebstrap", "--variant=minbase", "--quiet", f"--include={','.join(BASE_PACKAGES)}",
                            *excludes, "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                            "--format=tar", DEBIAN_SUITE, str(tar), DEBIAN_MIRROR],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed:\n{r.stderr[-3000:]}")
        ctr = buildah("from", "scratch")
        try:
            buildah("add", ctr, str(tar), "/")
            buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8", "--cmd", "python3",
                    "--label", f"org.opencontainers.image.description=Debian {DEBIAN_SUITE} with python3 (mmdebstrap)",
                    ctr)
            buildah("commit", "--quiet", ctr, ref)
        finally:
            buildah("rm", ctr)
    return ref


def build_pause(bindir: Path) -> str:
    binary, ref = bindir / "pause", pause_ref(bindir)
    if _exists(ref):
        return ref
    ctr = buildah("from", "scratch")
    try:
        buildah("copy", ctr, str(binary), "/pause")
        buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
        buildah("commit", "--quiet", ctr, ref)
    finally:
        buildah("rm", ctr)
    return ref


def build_dockerfile(image: Image, base: str) -> str:
    ref = f"{image.local}:{content_key(image, _image_id(base))}"
    if _exists(ref):
        return ref
    log(f"building {ref} from {image.dockerfile}")
    mounts = []
    # The host's trust store and pip settings, for builds behind a TLS-inspecting proxy (as here).
    for path in ("/etc/ssl/certs", "/etc/pip.conf"):
        if Path(path).exists():
            mounts += ["--volume", f"{path}:{path}:ro"]
    args = [f"--build-arg={k}={v}" for k, v in (("BASE_IMAGE", base), *image.build_args)]
    buildah("build", *BUILD_FLAGS, *mounts, *args,
            "--file", str(REPO_ROOT / image.dockerfile), "--tag", ref, str(REPO_ROOT / image.context))
    return ref


def build(bindir: Path, names: tuple[str, ...] = ()) -> dict[Image, str]:
    """Build (or find) every image, or those named; returns each image's local reference."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    wanted = [i for i in IMAGES if not names or i.name in names]
    refs: dict[Image, str] = {}
    base = build_base() if any(i.dockerfile for i in wanted) else ""
    for image in wanted:
        refs[image] = build_pause(bindir) if image is PAUSE else build_dockerfile(image, base)
    return refs


def built(bindir: Path) -> dict[Image, str]:
    """The images whose current content is built already (nothing is built)."""
    found: dict[Image, str] = {}
    if not cache_dir().exists():
        return found
    if (bindir / "pause").exists() and _exists(ref := pause_ref(bindir)):
        found[PAUSE] = ref
    if _exists(base := base_ref()):
        base_id = _image_id(base)
        for image in IMAGES:
            if image.dockerfile and _exists(ref := f"{image.local}:{content_key(image, base_id)}"):
                found[image] = ref
    return found


def remote(image: Image, ref: str, registry: str = REGISTRY) -> list[str]:
    """The names an image is pushed under: its content key and its fixed tags."""
    return [f"{registry}/kiln/{image.name}:{tag}" for tag in (ref.rsplit(":", 1)[1], *image.tags)]


def push(refs: dict[Image, str], host_port: int) -> list[str]:
    """Push to the registry that listens on the host's 127.0.0.1:host_port; returns the names as pods
    see them (127.0.0.1:5001/...)."""
    pushed = []
    for image, ref in refs.items():
        for name, there in zip(remote(image, ref), remote(image, ref, f"127.0.0.1:{host_port}"), strict=True):
            buildah("push", "--quiet", "--tls-verify=false", ref, f"docker://{there}")
            pushed.append(name)
    return pushed
