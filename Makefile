# Everything creates what it needs: a venv in .venv with the project and its extras.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test lint typecheck unit demo bench clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "needs $(PY) on PATH (or make PY=python3)"; exit 1; }
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo,bench]'
	@touch $(STAMP)

## lint, type-check, then the whole test suite (unit, integration, reliability, deploy)
test: $(STAMP) lint typecheck
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || echo "$(PROM_HINT)"
	$(BIN)/python -m pytest

PROM_HINT := promtool/prometheus not on PATH: their tests skip (fail under CI=true); get them with: sudo apt-get install -y prometheus

lint: $(STAMP)
	$(BIN)/ruff check consumer tests bench
	$(BIN)/ruff format --check consumer

typecheck: $(STAMP)
	$(BIN)/mypy

## unit tests only (no broker, no sockets beyond loopback HTTP)
unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not reliability"

## the daemon's main job on an embedded broker and a local LivePerson sandbox
demo: $(STAMP)
	$(BIN)/engagement-consumer demo $(DEMO_ARGS)

## benchmarks: writes bench/RESULTS.md and bench/throughput.png
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
