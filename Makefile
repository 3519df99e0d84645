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
EMULATOR := $(PY) tests/emulator.py run --

.PHONY: run test unit venv build clean

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
	$(EMULATOR) bash -c '$(PY) -m unittest tests/test_emulator.py 2>&1 | tail -n 3 && $(CARGO) test --locked'

## Fast loop: the pure core only, no emulator.
unit:
	$(CARGO) test --locked --lib

build:
	$(CARGO) build --locked

clean:
	rm -rf $(VENV) target
