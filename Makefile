# Kiln — developer entry points. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup node-packages control-plane helm kstatus images cluster-up cluster-down crds manifests chart-lint demo test test-unit lint clean bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(BIN)/kiln: pyproject.toml
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/kiln node-packages control-plane helm kstatus  ## .venv with the kiln command; Debian packages of the real node (as root); the cluster, helm and kstatus built (cached)

node-packages:  ## as root: the Debian packages of the real node and the image builds (containerd, runc, CNI, buildah, ...)
	@bash hack/install-node-packages.sh

control-plane:  ## build etcd, kube-*, kubectl, kwok, kubelet, kube-proxy and pause from Go modules (cached by version)
	@bindir=$$(bash hack/build-control-plane.sh) && ln -sf "$$bindir/kubectl" $(BIN)/kubectl

helm: $(BIN)/kiln  ## build the pinned helm from Go modules (cached by version) into .venv/bin/helm
	@helm=$$(bash hack/helm/build.sh) && ln -sf "$$helm" $(BIN)/helm

kstatus: $(BIN)/kiln  ## build hack/kstatus (kstatus of an object, for the GitOps tests; cached by version)
	@kstatus=$$(bash hack/kstatus/build.sh) && ln -sf "$$kstatus" $(BIN)/kstatus

images: setup  ## build the images (operator, scorer v1/v2, pause) with buildah, cached by content; push them if a local cluster runs
	$(BIN)/kiln images build --push

cluster-up: setup  ## start the local cluster (control plane, simulated and real node, registry) on 127.0.0.1
	$(BIN)/kiln cluster up

cluster-down:  ## stop it
	$(BIN)/kiln cluster down

crds: $(BIN)/kiln  ## regenerate crds/ from the pydantic models
	$(BIN)/python -m kiln.api.crds

manifests: helm  ## sync the chart's CRDs, the kustomize base and the Argo CD health checks (deploy/generate.py)
	$(BIN)/python deploy/generate.py

chart-lint: helm  ## helm lint --strict, hadolint
	$(BIN)/helm lint --strict charts/kiln
	$(BIN)/hadolint -c .hadolint.yaml Dockerfile

demo: setup  ## the main job: cluster, CRDs, operator, the tutorial's examples
	bash hack/demo.sh

test: setup  ## all tests, against the local control plane (or KILN_TEST_KUBECONFIG)
	$(BIN)/pytest

test-unit: $(BIN)/kiln  ## the fast tests only
	$(BIN)/pytest tests/unit

lint: $(BIN)/kiln  ## ruff and mypy
	$(BIN)/ruff check operator tests
	$(BIN)/mypy

clean:  ## remove the virtual environment
	rm -rf $(VENV)

bench: setup  ## benchmarks against a private local control plane: bench/results.json (BENCH_QUICK=1: smaller)
	$(BIN)/python bench/run.py
