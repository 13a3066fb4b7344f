# espresso: build, test, demo, bench.
#   make test    install everything (see `install`) and run ALL tests, servers included
#   make demo    install everything and run `espresso demo`
#   make bench   install everything and run the benchmarks
# Variables: PYTHON (default python3.11, else python3), PYTEST_ARGS (e.g. "-k redis -x").

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_QUIET := --progress-bar off
PIP_LOG := $(VENV)/pip-install.log
PYTEST_ARGS ?=
# Debian packages the tests run for real (binary:package)
SYSTEM_DEPS := /usr/bin/redis-server:redis-server /usr/bin/prometheus:prometheus
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_LOG := $(or $(TMPDIR),/tmp)/espresso-apt.log
export DEBIAN_FRONTEND := noninteractive

.PHONY: help install system-deps test demo bench lint clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

install: system-deps $(VENV)/.installed

# apt-get only for what is missing, so repeated runs are quick. Services are not started
# (policy-rc.d), the tests start their own servers on free ports.
system-deps:
	@pkgs=""; \
	for dep in $(SYSTEM_DEPS); do \
	  bin=$${dep%%:*}; pkg=$${dep#*:}; \
	  [ -x "$$bin" ] || command -v "$$(basename $$bin)" >/dev/null || pkgs="$$pkgs $$pkg"; \
	done; \
	if [ ! -x $(BIN)/python ] && ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  pkgs="$$pkgs $$($(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')"; \
	fi; \
	[ -n "$$pkgs" ] || exit 0; \
	command -v apt-get >/dev/null || { echo "error: missing$$pkgs and no apt-get: install them" >&2; exit 1; }; \
	echo "==> apt-get install$$pkgs (log: $(APT_LOG))"; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
	  printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	  $(SUDO) chmod 755 /usr/sbin/policy-rc.d; \
	  trap '$(SUDO) rm -f /usr/sbin/policy-rc.d' EXIT; \
	fi; \
	{ [ -n "$${APT_UPDATED:-}" ] || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    -o Dpkg::Use-Pty=0 $$pkgs; } >$(APT_LOG) 2>&1 \
	  || { tail -n 30 $(APT_LOG); echo "error: apt-get failed, see $(APT_LOG)" >&2; exit 1; }; \
	echo "    done"

# The Python environment is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | system-deps
	@echo "==> Python environment in $(VENV): pip install -e '.[dev]' (log: $(PIP_LOG))"
	@[ -x $(BIN)/pip ] || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	@{ $(PIP) install $(PIP_QUIET) --upgrade pip && $(PIP) install $(PIP_QUIET) -e '.[dev]'; } \
	  >$(PIP_LOG) 2>&1 || { tail -n 40 $(PIP_LOG); echo "error: pip install failed, see $(PIP_LOG)" >&2; exit 1; }
	@touch $@
	@echo "    done: $$($(BIN)/python --version), $$($(BIN)/python -m pip list 2>/dev/null | tail -n +3 | wc -l) packages"

test: install
	@echo "==> pytest (all tests; Kafka broker, Redis and Prometheus are started by fixtures)"
	$(BIN)/python -m pytest --durations=10 $(PYTEST_ARGS)

demo: install
	$(BIN)/espresso demo

bench: install
	$(BIN)/python bench/run_all.py

lint: install
	@if [ -x $(BIN)/ruff ]; then $(BIN)/ruff check .; \
	else $(BIN)/python -m compileall -q state flows connectors metrics tests bench && echo "compile ok (install ruff for a real lint)"; fi

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
