# chatops: every entry point a person or CI uses. `make demo` shows the product offline;
# `make test` runs every test (CI runs exactly that through .ci/run).

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
PORT ?= 3000

.PHONY: bench-memory demo local test check fmt fmt-check clippy bench bench-calls bench-coldstart build deploy lint \
        tools test-tools lambda-tools sam-tools lint-tools fuzz

## The product, offline: stand-ins for GitLab and Slack, the example jobs, a transcript.
demo:
	$(CARGO) run --quiet --bin chatops -- demo

## The product on 127.0.0.1:$(PORT) against real Slack/GitLab (see README "Local mode").
local:
	$(CARGO) run --quiet --bin chatops -- local --port $(PORT)

## Every check CI runs (.ci/run runs exactly this): rustfmt, clippy -D warnings, every test
## (unit, integration over moto, end to end, architecture), template lints.
## One moto server (a free port) serves every test process; each test uses its own queue and
## table names. Without CHATOPS_TEST_MOTO_URL, tests/support starts moto itself.
test: fmt-check clippy test-tools
	@set -e; port=$$($(PYTHON) -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	mkdir -p target; $(MOTO_BIN)/python tests/support/moto_server.py -H 127.0.0.1 -p $$port >target/moto-test.log 2>&1 & moto=$$!; \
	trap 'kill $$moto 2>/dev/null' EXIT; \
	CHATOPS_TEST_MOTO_URL=http://127.0.0.1:$$port $(NEXTEST) run --workspace --no-fail-fast
	$(MAKE) --no-print-directory lint

## The same as `make test`: the name the before-stop checklist uses.
check: test

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) bench --bench reply --bench ingress

## Calls per run (README "Calls per run"): one run of each kind (success, failure, manual,
## missing job, refused) through the real handlers, wired as the Lambdas wire them, against
## the GitLab and Slack stand-ins and moto; prints the requests per run by system (GitLab,
## DynamoDB reads/writes, SQS, Slack) and the invocations per function, with the success
## run's requests per operation. Fails when a successful run exceeds its budget
## (tests/calls.rs BUDGET). A debug test: no release build.
bench-calls: test-tools
	$(NEXTEST) run --test calls --no-capture

## Fuzz the parsers with cargo-fuzz (libFuzzer), each target for FUZZ_SECONDS from its seeds
## in tests/fuzz/seeds/<target> (real payloads; tests/fuzz/README.md): reply (job logs),
## slack_form (signature check + slash-command form), mattermost_form, webhook (GitLab hooks),
## command (grammar + escaping of the notices). `make fuzz FUZZ_TARGET=webhook` runs one.
## Every target runs even when one fails; the summary names the failures (crash inputs are in
## tests/fuzz/artifacts/<target>/) and the exit status is non-zero. libFuzzer needs -Z flags:
## nightly when installed, else the stable toolchain with RUSTC_BOOTSTRAP=1. Same-result-in-
## any-chunking is also checked by `make test` (tests/reply.rs, random and mutated inputs).
## cargo-fuzz is installed into $(CARGO_TOOLS) when missing; PATH is set in the recipe because
## CARGO_TOOLS is defined further down (a target-specific `:=` would see it empty).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := reply slack_form mattermost_form webhook command
FUZZ_TARGET ?= $(FUZZ_TARGETS)
fuzz:
	@export PATH="$(abspath $(CARGO_TOOLS))/bin:$$PATH"; \
	  $(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked --root $(CARGO_TOOLS) cargo-fuzz || exit 1; \
	  if rustup run nightly rustc --version >/dev/null 2>&1; then tc=+nightly; else tc=; export RUSTC_BOOTSTRAP=1; fi; \
	  failed=; \
	  for t in $(FUZZ_TARGET); do \
	    case " $(FUZZ_TARGETS) " in *" $$t "*) ;; *) echo "no fuzz target $$t (have: $(FUZZ_TARGETS))" >&2; exit 2;; esac; \
	    mkdir -p tests/fuzz/corpus/$$t; \
	    echo "+ $(CARGO) $$tc fuzz run --fuzz-dir tests/fuzz $$t tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS)"; \
	    $(CARGO) $$tc fuzz run --fuzz-dir tests/fuzz $$t tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t \
	      -- -max_total_time=$(FUZZ_SECONDS) || failed="$$failed $$t"; \
	  done; \
	  if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed (reproducers under tests/fuzz/artifacts/)" >&2; exit 1; fi; \
	  echo "fuzz: $(FUZZ_TARGET): no crash in $(FUZZ_SECONDS) s each"

## Cold starts of the three functions, each against its floor, from one run
## (tests/benches/coldstart.rs): release `ingress` vs `ingress-floor` (only sends to SQS),
## `dispatcher` vs `dispatcher-floor` (1 GitLab GET + 1 DynamoDB PutItem), `completion` vs
## `completion-floor` (1 DynamoDB GetItem + 1 log GET + 1 Slack POST), process start -> first
## response under a local Lambda Runtime API, AWS on moto, GitLab and Slack on their stand-ins;
## interleaved, prints each pair's medians and the three ratios. CHATOPS_COLDSTART_RUNS=N
## starts per binary (default 40).
bench-coldstart: test-tools
	$(CARGO) bench --bench coldstart

## The same bench with each function limited to the CPU share Lambda gives a memory size
## (1,769 MB = one vCPU, so 128 MB = 7.2 % and 256 MB, the template's, = 14.5 % of a core),
## through a cgroup v1 `cpu` quota (needs root and a writable /sys/fs/cgroup/cpu): floor and
## function alike, AWS and the stand-ins unlimited. Prints both sizes' cold and warm figures.
## CHATOPS_COLDSTART_RUNS=N (default here 10).
CGROUP_CPU ?= /sys/fs/cgroup/cpu
bench-memory: test-tools
	@test -w $(CGROUP_CPU) || { echo "bench-memory needs a writable cgroup v1 cpu controller at $(CGROUP_CPU) (root)" >&2; exit 2; }
	@for mb in 128 256; do \
	  dir=$(CGROUP_CPU)/chatops-$$mb; mkdir -p $$dir && \
	  echo 100000 > $$dir/cpu.cfs_period_us && \
	  echo $$(( mb * 100000 / 1769 )) > $$dir/cpu.cfs_quota_us && \
	  echo "=== $$mb MB: $$(( mb * 1000 / 1769 ))‰ of a vCPU (cfs quota $$(( mb * 100000 / 1769 )) us / 100000 us)" && \
	  CHATOPS_COLDSTART_CGROUP=$$dir CHATOPS_COLDSTART_RUNS=$${CHATOPS_COLDSTART_RUNS:-10} \
	    $(CARGO) bench --bench coldstart || exit 1; \
	done

## Tools the tests need, installed from the package registries when missing, into the
## project: moto in the target/tools/moto virtualenv, cargo-nextest under target/tools/cargo
## when the machine has none (nothing global: PEP 668 machines refuse global pip).
MOTO_VENV := target/tools/moto
MOTO_BIN := $(MOTO_VENV)/bin
CARGO_TOOLS := target/tools/cargo
NEXTEST = $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo "$(CARGO) nextest" || echo "$(CARGO_TOOLS)/bin/cargo-nextest nextest")
test-tools:
	@$(MOTO_BIN)/python -c 'import moto.server, flask, flask_cors' 2>/dev/null || { \
	    echo "installing moto into $(MOTO_VENV)"; \
	    $(PYTHON) -m venv $(MOTO_VENV) && \
	    $(MOTO_BIN)/pip install --quiet --disable-pip-version-check 'moto[server]>=5.1'; }
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO_TOOLS)/bin/cargo-nextest --version >/dev/null 2>&1 || \
	    $(CARGO) install --locked --root $(CARGO_TOOLS) cargo-nextest

## Template lints (CI runs them through `make test`): the SAM transform expanded offline
## (what `sam validate` does), cfn-lint on the template and on its expansion, checkov on the
## template. Each checkov skip is written, with its reason, in the template's Metadata.
LINT_VENV := target/tools/lint
LINT_BIN := $(LINT_VENV)/bin
lint: lint-tools
	@$(LINT_BIN)/python infra/sam_translate.py infra/template.yaml target/infra/template.cfn.json
	$(LINT_BIN)/cfn-lint infra/template.yaml target/infra/template.cfn.json
	$(LINT_BIN)/checkov --quiet --compact --skip-download --framework cloudformation \
	    -f infra/template.yaml
	@echo "template lints: clean"

## cfn-lint, the SAM translator and checkov in their own virtualenv (checkov pins an old
## boto3 that would break moto's if installed beside it).
lint-tools:
	@$(LINT_BIN)/python -c 'import cfnlint, samtranslator, checkov' 2>/dev/null || { \
	    echo "installing cfn-lint, aws-sam-translator, checkov into $(LINT_VENV)"; \
	    $(PYTHON) -m venv $(LINT_VENV) && \
	    $(LINT_BIN)/pip install --quiet --disable-pip-version-check \
	        'cfn-lint>=1.20' 'aws-sam-translator>=1.90' 'checkov>=3.2'; }

## The three Lambda zips (target/lambda/<fn>/bootstrap.zip): arm64, or x86-64 when this
## machine cannot build arm64 (then deploy with `make deploy`, which builds arm64 itself).
LAMBDAS := ingress dispatcher completion
build: lambda-tools
	@set -e; bins="$(foreach f,$(LAMBDAS),-p $(f))"; \
	if $(CARGO) lambda build --release --arm64 --output-format zip $$bins; then arch=arm64; \
	else echo "arm64 build failed: falling back to x86-64"; \
	    $(CARGO) lambda build --release --x86-64 --output-format zip $$bins; arch=x86_64; fi; \
	echo "built $$arch zips:"; \
	for f in $(LAMBDAS); do \
	    z=$(or $(CARGO_TARGET_DIR),target)/lambda/$$f/bootstrap.zip; \
	    printf '  %-11s %s  %7.2f MB\n' $$f $$z "$$(awk -v b=$$(stat -c %s $$z) 'BEGIN{print b/1048576}')"; \
	done

## cargo-lambda (with zig, from PyPI) in its own virtualenv, target/tools/lambda: never a
## global `pip install` (PEP 668 systems refuse those). The targets that run `cargo lambda`
## (build, deploy, watch, invoke-*) put that venv's bin first on PATH, which also makes its
## python3 (with zig) the one cargo-lambda finds; a cargo-lambda already on PATH is used as is.
## Also the arm64 Rust target (rustup) when missing.
LAMBDA_VENV := target/tools/lambda
LAMBDA_BIN := $(CURDIR)/$(LAMBDA_VENV)/bin
build deploy watch: export PATH := $(LAMBDA_BIN):$(PATH)
invoke-%: export PATH := $(LAMBDA_BIN):$(PATH)
lambda-tools:
	@$(LAMBDA_BIN)/cargo-lambda lambda --version >/dev/null 2>&1 || \
	$(CARGO) lambda --version >/dev/null 2>&1 || { \
	    echo "installing cargo-lambda (with zig) into $(LAMBDA_VENV)"; \
	    $(PYTHON) -m venv $(LAMBDA_VENV) && \
	    $(LAMBDA_VENV)/bin/pip install --quiet --disable-pip-version-check cargo-lambda; }
	@rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$$' || \
	    rustup target add aarch64-unknown-linux-gnu || \
	    echo "note: no aarch64 Rust target here; make build will fall back to x86-64"

## The guided deploy, `chatops deploy` (README "First deploy"): asks for (or reads from the
## environment) the region, GitLab and Slack answers, stores the secrets in SSM, runs
## `sam build` + `sam deploy` with the SAM CLI of sam-tools, sets up the GitLab webhooks,
## writes target/slack-app-manifest.yaml and prints what is left. Safe to run again: it
## changes only what changed. Needs AWS credentials (aws configure / AWS_PROFILE).
## DEPLOY_ARGS go to `chatops deploy`, e.g. DEPLOY_ARGS='--fix-variables-role' or
## DEPLOY_ARGS='--non-interactive' (CI); `chatops deploy --help` lists them.
SAM_VENV := target/tools/sam
SAM := $(CURDIR)/$(SAM_VENV)/bin/sam
DEPLOY_ARGS ?=
deploy: lambda-tools sam-tools
	$(CARGO) run --quiet --bin chatops -- deploy --sam $(SAM) --infra-dir infra --out-dir target $(DEPLOY_ARGS)

## The AWS SAM CLI and the AWS CLI (v1, PyPI `awscli`) in target/tools/sam: put
## target/tools/sam/bin on PATH to use `aws` and `sam` directly (README "First deploy").
sam-tools:
	@$(SAM) --version >/dev/null 2>&1 && $(SAM_VENV)/bin/aws --version >/dev/null 2>&1 || { \
	    echo "installing aws-sam-cli and awscli into $(SAM_VENV)"; \
	    $(PYTHON) -m venv $(SAM_VENV) && \
	    $(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli awscli; }

## The three functions under `cargo lambda watch` (the Runtime API emulator on port 9000,
## rebuilt on every change) with infra/watch.env: local secrets that match the samples in
## events/, AWS pointed at a moto server on 127.0.0.1:5000, GitLab and Slack at local ports.
## Then, in another terminal, `make invoke-<function>`.
WATCH_ENV ?= infra/watch.env
.PHONY: watch
watch: lambda-tools
	$(CARGO) lambda watch --env-file $(WATCH_ENV)

## Invoke a function in `make watch` (run it in another terminal first) with its sample
## event: make invoke-ingress | invoke-dispatcher | invoke-completion [EVENT=file]. Gives up
## after INVOKE_TIMEOUT seconds (cargo lambda invoke itself would wait for ever).
EVENT_ingress ?= events/slack-command-run.json
EVENT_dispatcher ?= events/sqs-run-request.json
EVENT_completion ?= events/gitlab-pipeline-hook.json
INVOKE_TIMEOUT ?= 30
TIMEOUT_CMD := $(or $(shell command -v timeout 2>/dev/null),$(shell command -v gtimeout 2>/dev/null))
invoke-%: lambda-tools
	$(if $(TIMEOUT_CMD),$(TIMEOUT_CMD) $(INVOKE_TIMEOUT) ,@echo "note: no timeout(1) here (macOS: brew install coreutils)"; )$(CARGO) lambda invoke $* \
	    --data-file $(or $(EVENT),$(EVENT_$*)) || { rc=$$?; [ $$rc != 124 ] || \
	    echo "no answer within $(INVOKE_TIMEOUT) s: is \`make watch\` running, and done compiling?" >&2; exit $$rc; }
