# Two entry points for a new machine (README): `make demo` and `make test`.
# Both create .venv with the package installed; nothing else is needed beyond Python 3.11 (and Go for the real peers).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo lint test test-fast peers bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

# The main job: the daemon keeps examples/ applied on the embedded DMR emulator (Ctrl-C to stop).
demo: $(STAMP)
	$(BIN)/localmodel watch examples --emulator --interval 10 --status-addr 127.0.0.1:9464

# The gates, over the whole repository (configured in pyproject.toml; .pre-commit-config.yaml runs the same).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The gates, then builds (or reuses) the real peers and runs every test: unit, contract, end-to-end, peers.
# Property tests run derandomized here (the landing gate); plain `pytest` explores new examples.
# A peer that fails to build fails the tests that need it, with the build log's tail.
test: $(STAMP) lint
	tests/peers/build > $(VENV)/peers.env 2> $(VENV)/peers.env.log || true
	LOCALMODEL_PEERS_FILE=$(CURDIR)/$(VENV)/peers.env HYPOTHESIS_PROFILE=ci $(BIN)/pytest

# The gates, then the unit and contract tests on the emulator (no Go build), on every core (pytest-xdist).
test-fast: $(STAMP) lint
	$(BIN)/pytest -n auto -m 'not peers' tests/unit tests/contract

peers:
	tests/peers/build

# Figures side by side with a baseline measured in the same run (the operator bench builds the peers).
bench: $(STAMP)
	$(BIN)/python bench/daemon_bench.py
	$(BIN)/python bench/operator_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
