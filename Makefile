# resizeflow: `make` runs lint, typecheck and test. Every target installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := libvirt-dev pkg-config redis-server gcc python3-dev python3-venv
# What real guests need (the vm tier, the qemu demo); never libvirt-daemon-system,
# which pulls in systemd.
VM_APT_PACKAGES := qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu \
  libvirt-clients busybox-static iproute2
PYTEST_ARGS ?=
BENCH_ARGS ?=
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.DEFAULT_GOAL := all
.PHONY: all install system-deps vm-deps libvirtd guest test-vm demo test chaos lint typecheck bench up down flower compose-check clean

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

# System packages for real guests: QEMU, qemu-img, libvirtd, busybox for the test guest.
vm-deps:
	@if ! command -v libvirtd >/dev/null 2>&1 || ! command -v qemu-system-x86_64 >/dev/null 2>&1 \
	    || ! command -v qemu-img >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1 \
	    || ! command -v ip >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(VM_APT_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $(VM_APT_PACKAGES) >/dev/null; \
	  else \
	    echo "missing packages; run as root or: sudo apt-get install --no-install-recommends $(VM_APT_PACKAGES)"; exit 1; \
	  fi; \
	fi

# Start the system libvirtd (qemu:///system) unless one is running.
libvirtd: install vm-deps
	$(BIN)/python -m resizeflow.hypervisor.libvirtd

# The test guest, built from Debian packages into var/guest.
guest: install vm-deps
	$(BIN)/python -m resizeflow.hypervisor.guest var/guest

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

test: install
	$(BIN)/pytest -m "not vm" $(PYTEST_ARGS)

# Real QEMU guests (TCG) through the API and real workers; needs root.
test-vm: install vm-deps libvirtd
	$(BIN)/pytest -m vm $(PYTEST_ARGS)

# The full chaos round: both brokers, 50 servers per scenario, 100 races.
chaos: install
	mkdir -p var
	RESIZEFLOW_CHAOS_FULL=1 RESIZEFLOW_CHAOS_SERVERS=50 RESIZEFLOW_CHAOS_RACES=100 \
	RESIZEFLOW_CHAOS_BROKERS=redis,rabbitmq RESIZEFLOW_CHAOS_SUMMARY=var/chaos-summary.md \
	$(BIN)/pytest -m chaos $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check resizeflow tests
	$(BIN)/ruff format --check resizeflow tests
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
