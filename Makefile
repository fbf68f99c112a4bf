# chatops: every entry point a person or CI uses. `make demo` shows the product offline;
# `make test` runs every test (CI runs exactly that through .ci/run).

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
PORT ?= 3000

.PHONY: demo local test check fmt fmt-check clippy bench build deploy lint tools \
        test-tools lambda-tools sam-tools

## The product, offline: stand-ins for GitLab and Slack, the example jobs, a transcript.
demo:
	$(CARGO) run --quiet --bin chatops -- demo

## The product on 127.0.0.1:$(PORT) against real Slack/GitLab (see README "Local mode").
local:
	$(CARGO) run --release --bin chatops -- local --port $(PORT)

## Every test: unit, integration over moto, end to end, template lints.
test: test-tools
	$(CARGO) nextest run --workspace --no-fail-fast
	$(MAKE) --no-print-directory lint

check: fmt-check clippy test

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) bench --bench reply --bench ingress

## Tools the tests need, installed from the package registries when missing.
test-tools:
	@$(PYTHON) -c 'import moto.server, flask, flask_cors' 2>/dev/null || $(PYTHON) -m pip install --quiet 'moto[server]>=5.1'
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest

lint:
	@echo "template lints: added by the deploy issue"
