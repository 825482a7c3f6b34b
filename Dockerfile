# syntax=docker/dockerfile:1
# Kiln operator image: a wheel built in one stage, installed into a slim runtime as a non-root user.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY crds ./crds
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin kiln
USER 65532:65532
ENTRYPOINT ["kiln", "run"]
