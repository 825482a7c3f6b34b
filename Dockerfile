# syntax=docker/dockerfile:1
# The Kiln operator image: the package and its dependencies are installed into a virtual environment
# in a build stage, and only that environment is copied into a slim runtime that runs as a non-root
# user with no pip, setuptools or compiler. The Helm chart (charts/kiln) sets the arguments only:
#   docker build -t <registry>/kiln:0.1.0 .
# Pin the base by digest too when you publish (python:3.11.14-slim-bookworm@sha256:...).
# BASE_IMAGE: any Debian-based image with python3 (3.11+) and its venv module; `make images` passes one
# built from Debian's packages with mmdebstrap, where no public registry is reachable.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY operator ./operator
# A virtual environment of its own; pip and setuptools leave it once the package is in.
RUN python3 -m venv /opt/kiln \
    && /opt/kiln/bin/pip install . \
    && /opt/kiln/bin/pip uninstall --yes pip setuptools \
    && /opt/kiln/bin/kiln --help > /dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="kiln" \
      org.opencontainers.image.description="Kiln Kubernetes operator (kiln.dev/v1alpha1)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/kiln/bin:$PATH
# No installers at run time; a passwd entry for the uid the chart runs as (65532, like distroless).
RUN if python3 -m pip --version > /dev/null 2>&1; then \
      python3 -m pip uninstall --yes --no-cache-dir pip setuptools wheel; fi \
    && useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kiln
COPY --from=build /opt/kiln /opt/kiln
USER 65532:65532
ENTRYPOINT ["kiln", "run"]
