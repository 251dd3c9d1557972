# The two commands the README starts with: `make up` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install frontend up test test-floors test-realsize lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# torch first and pinned, so pip takes the local CPU wheel where one is offered
# instead of resolving a CUDA build through diffusers/transformers.
install: $(BIN)/python frontend
	$(BIN)/pip install -q "torch==2.13.0" numpy
	$(BIN)/pip install -q -e ".[models,dev]"

# The pages' front-end libraries (web/frontend/package.json) from the npm registry, copied into
# web/static/vendor: pinned by package-lock.json, never committed, never loaded from a CDN.
frontend:
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ with npm (the web pages' libraries come from the npm registry)" >&2; exit 1; }
	cd web/frontend && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

up: install
	$(BIN)/bulkgen up

test: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest $(PYTEST_ARGS)

# Real-size SAM3 and Wan 2.2 (random weights) through the providers on CPU: about 6 minutes and
# 16 GB of memory, so `make test` leaves it out (docs/benchmarks.md, "Real-size models on CPU").
test-realsize: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -m realsize tests/providers/test_realsize.py $(PYTEST_ARGS)

# The provider tests again on the lowest transformers, diffusers and accelerate pyproject.toml allows,
# in their own venv (.venv-floors, kept between runs): `make test` only sees the newest releases.
test-floors:
	PY=$(PY) .ci/floors $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf var .pytest_cache
