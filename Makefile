# The two commands a newcomer types on a fresh Debian machine: `make demo` and `make test`.
# Everything they need is installed here, so CI (which only runs `make test`) proves the README.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests and the demo use: a real Mosquitto broker, venv support, a real
# headless Chromium for the console's browser tests, FUSE for the power-cut filesystem,
# iproute2 for network namespaces, and PostgreSQL (the gateway database's second backend; the
# tests start their own cluster). Each is installed only when dpkg says it is missing.
SYSTEM_PACKAGES := mosquitto python3-venv chromium chromium-driver fuse3 iproute2 postgresql

.PHONY: demo test bench soak lint docs system venv clean

demo: venv
	$(BIN)/siteclock demo

# CI runs `make test`: the lint (style and the layers) first, then the whole suite.
test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python -m bench

# docs/config.md is generated from the configuration classes (a test fails when it drifts).
docs: venv
	$(BIN)/siteclock config-doc --out docs/config.md

# Not part of `make test` nor `make bench`: SOAK_SECONDS (default 3600) of random faults across
# terminals, broker, gateway and simulator in network namespaces (root), then the history check;
# bench/results/soak.json and soak_*.png.
soak: venv
	$(BIN)/python -m bench.soak

# import-linter reads the package tree from disk, but the role folders sit at the top of the
# repository and join the `siteclock` namespace only when installed (package-dir): the contracts
# in pyproject.toml are checked on a copy laid out as the wheel is (siteclock/terminal, ...).
IMPORT_GRAPH := build/import-graph
ROLES        := terminal gateway provisioning hw

lint: venv
	$(BIN)/ruff check .
	@rm -rf $(IMPORT_GRAPH) && mkdir -p $(IMPORT_GRAPH)
	@cp -r siteclock $(IMPORT_GRAPH)/siteclock
	@for role in $(ROLES); do cp -r $$role $(IMPORT_GRAPH)/siteclock/$$role; done
	cd $(IMPORT_GRAPH) && $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

# Installs only what is missing, so a machine that already has everything never needs apt.
system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status} ' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

venv: system $(VENV)/.installed

# Debian's python3 needs python3-venv for `-m venv`; install it only when venv fails.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "installing python3-venv"; $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && \
		$(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info demo-site
