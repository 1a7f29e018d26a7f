# guard: `make run` starts a sandbox guard; `make test` installs what the tests need and runs them all.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest's options for `make test`: four workers (the tests mostly wait on their peers), each
# test to the next free worker except the hostile-input cases, which share one guard and stay
# together (tests/conftest.py); the slowest tests listed at the end.
# Serially: make test PYTEST_ARGS=-n0. See docs/development.md, "Running the tests".
PYTEST_ARGS ?= -n 4 --dist loadgroup --durations=25

.PHONY: run test lint typecheck unit bench peers install clean test-container

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

peers:
	bash scripts/install-peers.sh

run: install
	$(BIN)/guard serve --config config/sandbox.toml

lint: install
	$(BIN)/ruff check guard tests bench
	$(BIN)/ruff format --check guard tests bench
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy --strict guard

test: install peers lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest tests/unit

# Builds the image from a local Debian base with podman and runs it (about 10 minutes from a
# fresh clone, 6 with the base cached in var/container): run it before every change to docker/.
test-container: install
	bash scripts/install-container-tools.sh
	RUN_CONTAINER_TESTS=1 $(BIN)/python -m pytest -v -s tests/container

# Every target of the throughput work, each against the direct path measured in the same run
# (docs/benchmark.md): idle; one and four senders with both ledgers; the listener in its own
# process; a 2,000-instance study (memory); per-association CPU; the C-MOVE relay; the cost of
# byte verification per policy; one, two and three nodes behind HAProxy; audit queries. The machine
# is shared: the first two run three times each and report the median run.
bench: install peers
	$(BIN)/python -m bench --idle 30 --sizes 200 --senders 1 4 --ledger sqlite postgresql --repeat 3
	$(BIN)/python -m bench --sizes 200 --no-listener-process --repeat 3
	$(BIN)/python -m bench --sizes 2000
	$(BIN)/python -m bench --sizes 2000 --no-listener-process
	$(BIN)/python -m bench.association_cpu --associations 200
	$(BIN)/python -m bench.move --instances 200
	$(BIN)/python -m bench.verify
	$(BIN)/python -m bench.nodes
	$(BIN)/python -m bench.audit_query

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
