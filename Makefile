# The two commands a newcomer types on a fresh Debian machine: `make demo` and `make test`.
# Everything they need is installed here, so CI (which only runs `make test`) proves the README.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests and the demo use: a real Mosquitto broker (and venv support).
SYSTEM_PACKAGES := mosquitto python3-venv

.PHONY: demo test bench lint system venv clean

demo: venv
	$(BIN)/siteclock demo

# CI runs `make test`: the lint (style and the layers) first, then the whole suite.
test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python -m bench

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

# Installs only what is missing, so a machine that already has it never needs apt.
system:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
		echo "installing Debian packages: $(SYSTEM_PACKAGES)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES); \
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
