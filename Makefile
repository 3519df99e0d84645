# kms-launch-doctor: `make run` (demo against the embedded emulator) and `make test` (everything).
# Both set themselves up: a Python venv with pinned packages for the AWS emulator (moto), a
# cargo build, and an emulator on a free 127.0.0.1 port that is stopped whatever happens.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
CARGO ?= cargo
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < tests/requirements.txt | cut -d' ' -f1)
EMULATOR := $(PY) tests/emulator run --

.PHONY: run test unit venv clean install

$(STAMP): tests/requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(STAMP)

## Seed the AWS Knowledge Center scenario in the emulator and diagnose it.
run: $(STAMP)
	$(CARGO) build --locked --quiet
	$(EMULATOR) $(PY) tests/demo.py

## The whole suite: the emulator's self-test, unit tests, emulator integration tests.
test: $(STAMP)
	$(EMULATOR) bash -c '$(PY) -m unittest discover -s tests/emulator -t tests 2>&1 | tail -n 3 && $(CARGO) test --locked'

## Install the CLI into ~/.cargo/bin (a release build), then say how to add shell completions.
install:
	$(CARGO) install --locked --path .
	@echo "Shell completions: kms-launch-doctor completions bash|zsh|fish (see README, Install)"

## Fast loop: the pure core and the use cases in-process (the in-memory adapter): no emulator, no Python.
unit:
	$(CARGO) test --locked --lib

clean:
	rm -rf $(VENV) target

# --- Deployment (AWS SAM): template checks, the Lambda artifact, the guided deploy. ------------
# A second venv, so that the emulator's .venv is not rebuilt: cfn-lint, checkov, SAM CLI and
# cargo-lambda (with zig), pinned together in tests/requirements-lint.txt. See docs/deploy.md.
LINT_VENV := .venv-lint
LINT_BIN := $(CURDIR)/$(LINT_VENV)/bin
LINT_STAMP := $(LINT_VENV)/.installed-$(shell cksum < tests/requirements-lint.txt | cut -d' ' -f1)
SAM := SAM_CLI_TELEMETRY=0 PATH="$(LINT_BIN):$$PATH" $(LINT_BIN)/sam

.PHONY: lint lint-venv build deploy

$(LINT_STAMP): tests/requirements-lint.txt
	rm -rf $(LINT_VENV)
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_BIN)/python -m pip install --quiet --disable-pip-version-check -r tests/requirements-lint.txt
	touch $@

lint-venv: $(LINT_STAMP)

## Rust style and lints (clippy denies unwrap/expect/panic/indexing outside tests), and
## template.yaml: cfn-lint, sam validate --lint, checkov, and the security review in tests/test_template.py.
lint: $(LINT_STAMP)
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(LINT_BIN)/cfn-lint template.yaml org/spoke.yaml
	$(SAM) validate --lint --region us-east-1
	$(LINT_BIN)/checkov -f template.yaml --compact --quiet --skip-download
	$(LINT_BIN)/checkov -f org/spoke.yaml --compact --quiet --skip-download
	$(LINT_BIN)/python -m unittest tests/test_template.py tests/test_check_artifact.py

## The Lambda artifact in .aws-sam/build: sam build runs, in this directory,
## `cargo lambda build --release --arm64 --bin kms-launch-doctor` (cold: 12+ minutes), then
## tests/check_artifact.py checks the bootstrap's architecture and glibc against the runtime.
build: $(LINT_STAMP)
	rustup target add aarch64-unknown-linux-gnu
	$(SAM) build --beta-features
	$(LINT_BIN)/python tests/check_artifact.py .aws-sam/build

## First deployment: asks for the stack name, region and parameters and saves them to samconfig.toml.
deploy: build
	$(SAM) deploy --guided

# --- Benchmarks (not part of .ci/run) ------------------------------------------------------------
# `make bench` measures on this machine and writes BENCHMARKS.md: API calls per diagnosis, a storm
# of 200 failures (scan and one SQS batch), process and start-up times, criterion benches of the
# pure core, artifact sizes, and Cloud Custodian side by side. It reuses target/ (cold, the builds
# alone take ~50 minutes here; warm it finishes in a few). A third venv holds the peer (c7n):
# bench/requirements.txt; the arm64 build uses the lint venv's cargo-lambda, as `make build` does.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-$(shell cksum < bench/requirements.txt | cut -d' ' -f1)

.PHONY: bench bench-profiles

$(BENCH_STAMP): bench/requirements.txt
	rm -rf $(BENCH_VENV)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

## Benchmarks -> BENCHMARKS.md (builds only what is missing or stale, then measures: ~8 minutes warm;
## the deployed storm drains its queue as the event source would, and the look-schedule model runs).
bench: $(STAMP) $(BENCH_STAMP) $(LINT_STAMP)
	export KLD_BENCH_STARTED=$$(date +%s); \
	$(PYTHON) bench/steps.py build; \
	$(PYTHON) bench/steps.py criterion; \
	$(PYTHON) bench/steps.py artifacts; \
	$(EMULATOR) $(PY) bench/run.py; \
	$(PYTHON) bench/schedule.py; \
	$(EMULATOR) $(PY) bench/organization.py; \
	$(PYTHON) bench/render.py

## The release profile's trade-off (opt-level, LTO, codegen units, panic): four cold release builds
## into target/kld-*/ (~1.5 hours here), then timed against the emulator; BENCHMARKS.md re-rendered.
bench-profiles: $(STAMP)
	$(PYTHON) bench/profiles.py build
	$(EMULATOR) $(PY) bench/profiles.py measure
	$(PYTHON) bench/render.py
