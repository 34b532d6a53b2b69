# resizeflow: `make` runs lint, typecheck and test. Every target installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := libvirt-dev pkg-config redis-server gcc python3-dev python3-venv
PYTEST_ARGS ?=
BENCH_ARGS ?=
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.DEFAULT_GOAL := all
BROWSER_PACKAGES := chromium chromium-driver
.PHONY: all install system-deps browser-deps demo test test-fast test-demo screenshot chaos lint typecheck bench up down flower compose-check clean

all: lint typecheck test

# System packages: libvirt headers for libvirt-python, and a Redis server.
system-deps:
	@if ! pkg-config --exists libvirt 2>/dev/null || ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(APT_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "missing system packages; run as root or: sudo apt-get install $(APT_PACKAGES)"; exit 1; \
	  fi; \
	fi

# Debian's chromium and its driver, for the test that opens Flower in a headless browser.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(BROWSER_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; \
	  else \
	    echo "missing the browser for the Flower test; run as root or: sudo apt-get install $(BROWSER_PACKAGES)"; exit 1; \
	  fi; \
	fi

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "resizeflow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: system-deps $(VENV)/.installed

demo: install
	$(BIN)/resizeflow demo $(DEMO_ARGS)

test: install browser-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# Pure logic only, in seconds: no Redis, PostgreSQL or RabbitMQ needed.
test-fast: install
	$(BIN)/pytest -m fast $(PYTEST_ARGS)

# The demo's tests, the Flower browser test among them.
test-demo: install browser-deps
	$(BIN)/pytest tests/test_demo.py $(PYTEST_ARGS)

# Refreshes docs/flower-tasks.png, the README's screenshot, from the Flower browser test.
screenshot: install browser-deps
	RESIZEFLOW_SCREENSHOT=docs/flower-tasks.png $(BIN)/pytest tests/test_demo.py -k flower

# The full chaos round: both brokers, 50 servers per scenario, 100 races.
chaos: install
	mkdir -p var
	RESIZEFLOW_CHAOS_FULL=1 RESIZEFLOW_CHAOS_SERVERS=50 RESIZEFLOW_CHAOS_RACES=100 \
	RESIZEFLOW_CHAOS_BROKERS=redis,rabbitmq RESIZEFLOW_CHAOS_SUMMARY=var/chaos-summary.md \
	$(BIN)/pytest -m chaos $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check resizeflow bench tests
	$(BIN)/ruff format --check resizeflow bench tests
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Throughput, latency and scaling against bare Celery chains; see bench/README.md.
bench: install
	$(BIN)/resizeflow bench $(BENCH_ARGS)

up:
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

# Validates compose.yaml without a Docker engine.
compose-check:
	$(COMPOSE) config -q

flower: install
	$(BIN)/resizeflow flower

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache *.egg-info
