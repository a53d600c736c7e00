# voxtune — the front door. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
# Naming torch's exact version on the pip command line keeps pip on the CPU wheel the package
# registry serves here; an unpinned torch pulls a multi-GB CUDA build. Override on GPU machines.
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=
# Packages the test suite needs from the OS (installed only when running as root, as CI does).
SYSTEM_PACKAGES ?= espeak-ng sox chromium

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help demo test lint bench system-packages clean

help:  ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)" -e '.[dev]'
	touch $@

install: $(STAMP)  ## create/refresh .venv with voxtune and its dependencies

system-packages:  ## install espeak-ng, sox and chromium with apt-get when root (tests need them)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "warning: not root, cannot install:" $$missing "(tests needing them are skipped)"; fi

demo: $(STAMP)  ## run the whole pipeline locally on synthesized speech (tiny model)
	$(BIN)/voxtune demo

test: $(STAMP) system-packages  ## lint and run the whole test suite
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests bench

bench: $(STAMP) system-packages  ## benchmarks (print ratios against the upstream recipe)
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/controller.py

.PHONY: learn
learn: $(STAMP) system-packages  ## proof that it learns: CER vs an audio-blind control (≈20 min)
	$(BIN)/python bench/learn.py

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
