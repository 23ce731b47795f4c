# Two set-up commands for a fresh machine: `make up` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: up test bench lint pythons install agent-release

$(STAMP): pyproject.toml
	rm -f $(VENV)/.installed-*
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo fleet polls every 10 s (production default: 300 s) so a ping answers quickly.
up: $(STAMP)
	FLEETLINE_POLL_INTERVAL_S=$${FLEETLINE_POLL_INTERVAL_S:-10} $(BIN)/fleetline up --data-dir .fleetline --agents 2 --hints

# Three workers, one test file each at a time (a file's module fixtures start once); every
# test brings its own database and processes, so files do not see each other. Three on two
# cores: the integration tier waits on processes and sockets more than it computes (two
# workers kept 1.3 cores busy; the suite took 13:52 with two, 11:25 with three).
test: $(STAMP)
	$(BIN)/pytest -q -n 3 --dist loadfile --durations=15 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# The agent as one file per platform: dist/fleetline-agent-<version>-<platform>.pyz
# (fleetline/agent_release.py says what it carries). VERSION is the one it reports.
agent-release: $(STAMP)
	$(BIN)/python -m fleetline.agent_release $(if $(VERSION),--version $(VERSION))

# ruff (with import order) and mypy over fleetline/, agent/, gateway/ and services/
# (pyproject.toml says how strictly, and where not).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The agent on Python 3.9, the server's unit and db tiers on 3.13: each when installed.
pythons:
	.ci/other-pythons
