# eddyline — run `make help` for the targets.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install tools demo test test-unit lint typecheck broker-start broker-stop bench clean
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[worker,query,collector,retrain,dev]'  # retrain: torch + Opacus, ~2.5 GB on first install
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)  ## create .venv and install eddyline with the worker, query and dev extras

tools:  ## Debian packages the tests use: promtool and the Prometheus server (alerts), Chromium (pages)
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromium >/dev/null || { \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends prometheus chromium; }

demo: install  ## start the local broker, run a worker and the simulator with a drift, print a summary
	$(VENV)/bin/eddyline demo

test: install tools  ## lint, types, then the whole suite against a real local Kafka broker
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

test-unit: install  ## unit tests only (no broker)
	$(PY) -m pytest -m "not integration"

lint: install  ## ruff and ruff-format
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: install  ## mypy strict over the packages
	$(VENV)/bin/mypy

broker-start: install  ## start the local Kafka broker on 127.0.0.1:9092
	$(VENV)/bin/eddyline broker start

broker-stop: install  ## stop the local Kafka broker
	$(VENV)/bin/eddyline broker stop

clean:  ## remove the venv, caches and the demo lake
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache lake .eddyline
