# syntax=docker/dockerfile:1
# The Kiln operator image: the package and its dependencies are installed into a virtual environment
# in a build stage, and only that environment is copied into a slim runtime that runs as a non-root
# user with no pip, setuptools or compiler. The Helm chart (charts/kiln) sets the arguments only:
#   docker build -t <registry>/kiln:0.1.0 .
# Pin the base by digest too when you publish (python:3.11.14-slim-bookworm@sha256:...).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY operator ./operator
# A virtual environment without pip of its own, filled by the base image's pip.
RUN python -m venv --without-pip /opt/kiln \
    && python -m pip --python /opt/kiln/bin/python install . \
    && /opt/kiln/bin/kiln --help > /dev/null

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="kiln" \
      org.opencontainers.image.description="Kiln Kubernetes operator (kiln.dev/v1alpha1)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/kiln/bin:$PATH
# No installers at run time; a passwd entry for the uid the chart runs as (65532, like distroless).
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kiln
COPY --from=build /opt/kiln /opt/kiln
USER 65532:65532
ENTRYPOINT ["kiln", "run"]
