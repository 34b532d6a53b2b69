# resizeflow: `make` runs lint, typecheck and test. Every target installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# qemu-storage-daemon (qemu-system-common) serves the block-storage host's volumes over
# NBD; qemu-io and qemu-img (qemu-utils) are what the tests reach them with.
APT_PACKAGES := libvirt-dev pkg-config redis-server gcc python3-dev python3-venv \
  qemu-system-common qemu-utils
# Debian's chromium and its driver, for the test that opens Flower in a headless browser.
BROWSER_PACKAGES := chromium chromium-driver
# Disks cross between hosts over SSH: the two-host tests run sshd, rsync, scp and qemu-img;
# the network tests plug bridges and VXLAN devices (iproute2's ip and bridge) and ask for
# leases with busybox's udhcpc.
HOSTS_APT_PACKAGES := openssh-server openssh-client rsync qemu-utils iproute2 busybox-static
# What real guests need (the vm tier, the qemu demo); never libvirt-daemon-system,
# which pulls in systemd.
VM_APT_PACKAGES := qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu \
  libvirt-clients busybox-static iproute2
# The DHCP agent's (resizeflow network), which the hosts and vm tiers run: not a compute host's.
NETWORK_APT_PACKAGES := dnsmasq-base iproute2
PYTEST_ARGS ?=
BENCH_ARGS ?=
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.DEFAULT_GOAL := all
.PHONY: all install system-deps browser-deps hosts-deps vm-deps libvirtd guest demo test test-fast \
	test-demo test-hosts test-matrix test-vm test-nova nova-venv screenshot chaos soak lint typecheck bench bench-vm up up-real-hosts down \
	flower compose-check docs \
	clean

all: lint typecheck test

# $(call apt_install,PACKAGES,CHECK): install PACKAGES with apt unless the shell test CHECK
# passes. apt may be busy for a moment (another install), so it is tried a few times.
define apt_install
	@if ! ( $(2) ) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(1)"; \
	    for try in 1 2 3 4 5; do \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $(1) >/dev/null) && break; \
	      [ $$try = 5 ] && exit 1; sleep 10; \
	    done; \
	  else \
	    echo "missing system packages; run as root or: sudo apt-get install $(1)"; exit 1; \
	  fi; \
	fi
endef

# System packages: libvirt headers for libvirt-python, a Redis server, qemu-storage-daemon.
system-deps:
	$(call apt_install,$(APT_PACKAGES),pkg-config --exists libvirt && command -v redis-server && command -v qemu-storage-daemon && command -v qemu-io)

browser-deps:
	$(call apt_install,$(BROWSER_PACKAGES),[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ])

hosts-deps:
	$(call apt_install,$(HOSTS_APT_PACKAGES) $(NETWORK_APT_PACKAGES),[ -x /usr/sbin/sshd ] && command -v rsync && command -v scp && command -v qemu-img && command -v dnsmasq && command -v bridge && command -v busybox)

# QEMU, qemu-img, libvirtd and busybox for the test guest.
vm-deps:
	$(call apt_install,$(VM_APT_PACKAGES) $(NETWORK_APT_PACKAGES),command -v libvirtd && command -v qemu-system-x86_64 && command -v qemu-img && command -v busybox && command -v ip && command -v dnsmasq)

# Start the system libvirtd (qemu:///system) unless one is running.
libvirtd: install vm-deps
	$(BIN)/python -m resizeflow.devstack.libvirtd

# The test guest, built from Debian packages into var/guest.
guest: install vm-deps
	$(BIN)/python -m resizeflow.devstack.guest var/guest

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "resizeflow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench,docs,keystone]'
	touch $@

install: system-deps $(VENV)/.installed

demo: install
	$(BIN)/resizeflow demo $(DEMO_ARGS)

# Each tier is a folder of tests/, and tests/conftest.py gives its tests the tier's
# marker, which the targets below select by: unit (fast), functional (services),
# hosts, chaos, vm and conformance (nova). `make test` runs the unit, functional and
# hosts tiers in two pytest processes (pytest-xdist; every stack is per process,
# with its own database, key prefix or vhost and state dir). The short chaos round
# runs after them, alone: its recovery budgets are measured on a machine that is
# not also running the rest of the suite. Exit code 5 is "nothing selected", as
# when PYTEST_ARGS picks tests from only one of the two runs.
# A functional test not marked for given stacks runs on TEST_STACKS: two that
# between them cover both databases and both brokers; `make test-matrix` runs
# every one on all four combinations.
TEST_PROCESSES ?= 2
TEST_STACKS ?= postgresql-redis,sqlite-rabbitmq
test: install browser-deps hosts-deps
	RESIZEFLOW_TEST_STACKS=$(TEST_STACKS) \
	$(BIN)/pytest -m "not vm and not chaos and not nova" -n $(TEST_PROCESSES) --durations=25 $(PYTEST_ARGS) \
		|| [ $$? = 5 ]
	$(BIN)/pytest -m "chaos and not vm and not nova" --durations=10 $(PYTEST_ARGS) || [ $$? = 5 ]

# The functional tier on every combination of database and broker.
test-matrix: install browser-deps hosts-deps
	RESIZEFLOW_TEST_STACKS=postgresql-redis,postgresql-rabbitmq,sqlite-redis,sqlite-rabbitmq \
	$(BIN)/pytest -m services -n $(TEST_PROCESSES) --durations=25 $(PYTEST_ARGS)

# The vm tier (tests/vm): real QEMU guests (TCG) through the API and real workers; needs root.
test-vm: install vm-deps libvirtd
	$(BIN)/pytest -m vm --durations=15 $(PYTEST_ARGS)

# Real Nova 34, Placement 16 and Keystone 30 in a virtualenv of their own, pinned by
# OpenStack's upper-constraints for the release (tests/conformance/constraints.txt).
NOVA_VENV ?= .venv-nova
$(NOVA_VENV)/.installed: tests/conformance/requirements.txt tests/conformance/constraints.txt
	$(PYTHON) -m venv $(NOVA_VENV)
	$(NOVA_VENV)/bin/python -m pip install -q --upgrade pip
	$(NOVA_VENV)/bin/python -m pip install -q -c tests/conformance/constraints.txt \
		-r tests/conformance/requirements.txt
	$(NOVA_VENV)/bin/python -m pip check
	touch $@

nova-venv: $(NOVA_VENV)/.installed

# The conformance tier (tests/conformance): the same requests on real Nova and on
# resizeflow, every answer compared (marker nova); the report goes to
# var/conformance/report.txt. The openstack CLI's server migration list also runs
# here, with real Keystone for its identity calls.
test-nova: install nova-venv
	$(BIN)/pytest -m nova --durations=5 $(PYTEST_ARGS)

# The unit tier (tests/unit), in seconds: no Redis, PostgreSQL or RabbitMQ needed.
test-fast: install
	$(BIN)/pytest -m fast $(PYTEST_ARGS)

# The demo's tests, the Flower browser test among them.
test-demo: install browser-deps
	$(BIN)/pytest tests/functional/test_demo.py $(PYTEST_ARGS)

# Refreshes docs/flower-tasks.png, the operations guide's screenshot, from the Flower browser test.
screenshot: install browser-deps
	RESIZEFLOW_SCREENSHOT=docs/flower-tasks.png $(BIN)/pytest tests/functional/test_demo.py -k flower

# The hosts tier (tests/hosts): two hosts on one machine, one sshd each on 127.0.0.x: disk
# copies, shared storage, failures, compose's real-host entry (which needs a running libvirtd).
test-hosts: install hosts-deps
	$(BIN)/pytest -m hosts $(PYTEST_ARGS)

# The chaos tier (tests/chaos), the full round: every database and broker, 50 servers per
# scenario, 100 races. RESIZEFLOW_CHAOS_SEED=N replays a failed scenario's random choices.
CHAOS_STACKS ?= postgresql-redis,postgresql-rabbitmq,sqlite-redis,sqlite-rabbitmq
chaos: install
	mkdir -p var
	RESIZEFLOW_CHAOS_SERVERS=50 RESIZEFLOW_CHAOS_RACES=100 \
	RESIZEFLOW_CHAOS_STACKS=$(CHAOS_STACKS) RESIZEFLOW_CHAOS_SUMMARY=var/chaos-summary.md \
	$(BIN)/pytest -m chaos $(PYTEST_ARGS)

# The model-based run (tests/chaos/test_model.py), long: every operation under faults on
# both brokers for SOAK_MINUTES each, its figures appended to var/soak-summary.md.
# RESIZEFLOW_SOAK_SEED=N replays a run's choices.
SOAK_MINUTES ?= 10
SOAK_OPERATIONS ?= 100000
SOAK_SERVERS ?= 12
soak: install
	mkdir -p var
	RESIZEFLOW_SOAK_MINUTES=$(SOAK_MINUTES) RESIZEFLOW_SOAK_OPERATIONS=$(SOAK_OPERATIONS) \
	RESIZEFLOW_SOAK_SERVERS=$(SOAK_SERVERS) RESIZEFLOW_SOAK_SUMMARY=var/soak-summary.md \
	$(BIN)/pytest -s --timeout=0 tests/chaos/test_model.py $(PYTEST_ARGS)

# The docs site (mkdocs.yml), in strict mode: a warning (a broken link or anchor, a
# page left out of the nav) fails the build. docs/hooks.py fills the settings reference
# and the flow table from the code; the site goes to var/site, which git ignores.
docs: install
	$(BIN)/mkdocs build --strict -d var/site

lint: install
	$(BIN)/ruff check resizeflow bench tests
	$(BIN)/ruff format --check resizeflow bench tests
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Throughput, latency and scaling against bare Celery chains; see bench/README.md and
# docs/benchmarks/.
bench: install
	$(BIN)/resizeflow bench $(BENCH_ARGS)

# Real resizes of a guest with 1 GiB of data between two hosts over SSH, beside rsync.
bench-vm: install hosts-deps vm-deps libvirtd
	mkdir -p /run/sshd
	$(BIN)/resizeflow bench --hypervisor qemu $(BENCH_ARGS)

up:
	$(COMPOSE) up -d --build

# Two compute hosts with real QEMU guests instead of the simulated ones; the
# simulated hosts are not started (compose starts every service without a profile).
REAL_HOSTS_UP := --profile real-hosts up -d --build --scale compute-1=0 --scale compute-2=0
up-real-hosts:
	$(COMPOSE) $(REAL_HOSTS_UP)

down:
	$(COMPOSE) --profile real-hosts down

# Validates compose.yaml without a Docker engine.
compose-check:
	$(COMPOSE) config -q
	$(COMPOSE) --profile real-hosts config -q

flower: install
	$(BIN)/resizeflow flower

clean:
	rm -rf $(VENV) $(NOVA_VENV) var .mypy_cache .ruff_cache *.egg-info
