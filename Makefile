# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project with its development tools first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration lint typecheck bench bench-fanout bench-subscriber-cpu bench-gateway bench-scale bench-request-flood tools pin-images clean

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

## get_token() against a Redis GET of the same key; confirmed publishes a second.
bench: $(STAMP)
	$(BIN)/python bench/get_token.py
	$(BIN)/python bench/publish.py

## Upstream answer to the last of 50 subscribers, against raw pika fan-out (about 2 min).
bench-fanout: $(STAMP)
	$(BIN)/python bench/fanout.py

## CPU per message of one TokenClient process against one raw pika consumer (about 30 s).
bench-subscriber-cpu: $(STAMP)
	$(BIN)/python bench/subscriber_cpu.py

## The gateway's authenticated GET against an endpoint doing a Redis GET, under wrk.
bench-gateway: $(STAMP) tools
	$(BIN)/python bench/gateway.py

## One producer with 1,000, 10,000 and 100,000 apps: fill, CPU, RSS, takeover, stop.
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

## Issue 8's quota drain: a consumer flooding refresh requests about the current token.
bench-request-flood: $(STAMP)
	$(BIN)/python bench/request_flood.py

## Debian tools the tests and benches call: promtool (package prometheus) and wrk.
## Installed with apt-get when missing (needs root, as on CI; .ci/run calls it).
tools:
	@if ! command -v promtool >/dev/null || ! command -v wrk >/dev/null; then \
	  echo "installing promtool (prometheus) and wrk with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus wrk >/dev/null; \
	fi

## Pin compose's and the Dockerfile's images by digest (needs docker buildx and the registry).
pin-images:
	$(PYTHON) deploy/pin_images.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
