# make run  : create .venv, install, migrate, start the main job (web + scheduler) on embedded defaults
# make test : create .venv, install with test extras, validate the shipped templates, run the whole suite
# Two install stamps: `make run` installs the app only; the test tools (Playwright, Hypothesis,
# aiosmtpd...) come with `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Test processes: the suite waits on servers, leases and browsers as much as it computes, so two
# workers (pytest-xdist) halve it on a 2-core machine; each worker starts its own Postfix and Chromium.
TEST_WORKERS ?= 2

.PHONY: run test install install-test bench validate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP) $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

run: install
	$(BIN)/nurture db upgrade
	$(BIN)/nurture run

validate: install
	$(BIN)/nurture templates validate --strict

test: install-test validate
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: install-test
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/bench_render.py
	$(BIN)/python bench/bench_signup.py
	$(BIN)/python bench/bench_send.py
	$(BIN)/python bench/bench_scale.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
