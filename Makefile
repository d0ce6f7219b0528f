# tier-router: `make run` starts the proxy, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: run test lint typecheck install install-dev services check bench train-difficulty check-difficulty clean

run: $(VENV)/.runtime
	$(BIN)/router serve

test: $(VENV)/.dev services
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.runtime: $(BIN)/uv requirements.lock pyproject.toml
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

$(VENV)/.dev: $(BIN)/uv requirements-dev.lock pyproject.toml
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@ $(VENV)/.runtime

services:
	./scripts/services.sh

check: $(VENV)/.runtime
	$(BIN)/router check policies/default.yaml
	$(BIN)/router check policies/demo.yaml

bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks.run

# the shared outcomes file: beside the checkout, or at the workspace's absolute path
DIFFICULTY_DATA ?= $(firstword $(wildcard ../shared/data/routing/outcomes_train.csv /work/shared/data/routing/outcomes_train.csv) ../shared/data/routing/outcomes_train.csv)

# Re-train the difficulty predictor: writes router/difficulty/model.json (same data → same bytes).
train-difficulty: $(VENV)/.dev
	$(BIN)/python scripts/train_difficulty.py --data $(DIFFICULTY_DATA)

# Re-train into a temporary file and require the shipped model to be byte-identical.
check-difficulty: $(VENV)/.dev
	tmp=$$(mktemp) && $(BIN)/python scripts/train_difficulty.py --data $(DIFFICULTY_DATA) --out $$tmp \
		&& cmp $$tmp router/difficulty/model.json && rm -f $$tmp && echo "difficulty model reproduced byte for byte"

lock: $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml -o requirements.lock --python-version 3.11
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --python-version 3.11

clean:
	rm -rf $(VENV) .pytest_cache
