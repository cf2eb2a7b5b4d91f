# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv with exactly the versions in uv.lock (hashes checked by uv) first.
# Only `make lock` changes uv.lock.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv itself, pinned, in a venv of its own (.tools), so `uv sync` never removes it from .venv.
UV_VERSION := 0.13.10
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# Never let uv download a Python of its own: the machine's $(PYTHON) is the one we test.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: demo test test-unit test-integration test-node test-lowest test-latest lint typecheck lock dist bench bench-fanout bench-subscriber-cpu bench-gateway bench-scale bench-request-flood bench-receiver-flood bench-platform-scale bench-platform-faults bench-token-path tools pin-images clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# --locked: the lock must match pyproject.toml (else: `make lock`); --exact removes anything
# installed by hand, so every machine runs what CI ran.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --exact --all-extras
	touch $(STAMP)

## Re-resolve every dependency (extras and dev tools included) into uv.lock.
lock: $(UV)
	$(UV) lock --upgrade

## The sdist and the wheel, in dist/ (what the Dockerfile installs).
dist: $(UV)
	rm -rf dist
	$(UV) build --sdist --wheel --out-dir dist

## Run the sandbox WeChat, the producer and a subscriber that prints each token it gets.
demo: $(STAMP)
	$(BIN)/python -m ops.demo

## Lint, type-check, then every test (unit and integration, slow ones included; the Node.js
## drop-in's, clients/node, through tests/integration/test_node_client.py).
test: $(STAMP) tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

## The Node.js drop-in's tests alone (clients/node; `make test` runs them through pytest,
## tests/integration/test_node_client.py, with the end-to-end test against the sandbox).
test-node:
	cd clients/node && npm ci --no-audit --no-fund && npm test

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

## Issue 21's forged flood: 1,000 forged pushes/s at the platform receiver, legitimate mixed in.
bench-receiver-flood: $(STAMP)
	$(BIN)/python bench/receiver_flood.py

bench-platform-scale: $(STAMP)
	$(BIN)/python bench/platform_scale.py

## Issue 21's fault rows: the leader SIGKILLed in a burst of 1,000 authorizations; the
## database cut for 60 s (on PostgreSQL; `--db mariadb` for the other).
bench-platform-faults: $(STAMP)
	$(BIN)/python bench/platform_faults.py

## The project modules one token passes through, from WeChat's answer to get_token().
bench-token-path: $(STAMP)
	$(BIN)/python bench/token_path.py

## The unit tests and the type check with the lowest versions pyproject.toml admits, and
## with the newest ones: the ranges users get are proven at both ends (not in .ci/run).
test-lowest: $(UV)
	.ci/test-resolution lowest-direct .venv-lowest
test-latest: $(UV)
	.ci/test-resolution highest .venv-latest

## Debian tools the tests and benches call: promtool (package prometheus) and wrk.
## Installed with apt-get when missing and we are root (as on CI and these machines);
## otherwise say what the tests will skip and how to install it.
tools:
	@command -v node >/dev/null && command -v npm >/dev/null || echo "NOTE: node or npm is" \
	  "missing: the Node.js drop-in's tests (clients/node) will be SKIPPED (and fail under" \
	  "CI=true). Install Node.js 20 or newer with npm."
	@if command -v promtool >/dev/null && command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing promtool (prometheus) and wrk with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus wrk >/dev/null; \
	else \
	  echo "NOTE: promtool or wrk is missing and this is not root: the alert-rule tests and" \
	       "the gateway bench's test will be SKIPPED. Install them: sudo apt-get install prometheus wrk"; \
	fi

## Pin compose's and the Dockerfile's images by digest (needs docker buildx and the registry).
pin-images:
	$(PYTHON) deploy/pin_images.py

clean:
	rm -rf $(VENV) $(TOOLS) clients/node/node_modules .venv-lowest .venv-latest dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
