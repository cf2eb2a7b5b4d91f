# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project with its development tools first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration lint typecheck bench bench-scale clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the sandbox WeChat, the producer and a subscriber that prints each token it gets.
demo: $(STAMP)
	$(BIN)/python -m ops.demo

## Lint, type-check, then every test (unit and integration, slow ones included).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## get_token() against a Redis GET of the same key, in one run.
bench: $(STAMP)
	$(BIN)/python bench/get_token.py

## One producer with 1,000, 10,000 and 100,000 apps: fill, CPU, RSS, takeover, stop.
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
