# Two commands a fresh clone needs:  `make up` runs the service, `make test` runs every check.
# Both install exactly requirements.lock (every package pinned, with hashes); `make lock` refreshes it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
STAMP := $(VENV)/.installed

.PHONY: up test check lock lock-check peers bench clean native

lock-check:  ## fail, saying what to run, when pyproject.toml's dependencies changed after the lock was made
	@$(PYTHON) .ci/lock.py check $(LOCK)

# A new lock makes a new venv, so nothing from an earlier lock lingers. The project goes in without
# build isolation: its build backend is the lock's setuptools, not whatever the index has today.
$(STAMP): $(LOCK) pyproject.toml setup.py | lock-check
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The project's protocol modules are compiled (mypyc, setup.py) as it installs; after editing one, its
# source runs (slower) until this builds them again.
native: $(STAMP)  ## rebuild the compiled protocol modules after editing them
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

up: $(STAMP)  ## run the Job Status service on embedded defaults (127.0.0.1:8000)
	$(BIN)/wirelab up

# The locker is the lock's own uv; with no venv yet, that version is fetched alone to start from.
$(BIN)/uv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' $(LOCK))"

lock: $(BIN)/uv  ## resolve pyproject.toml again into requirements.lock, keeping pins that still fit (UPGRADE=1: newest)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade) -o $(LOCK)
	$(PYTHON) .ci/lock.py stamp $(LOCK)

peers:  ## install the third-party peers the interop tests drive (curl, Node clients, ...)
	bash .ci/peers.sh

check: $(STAMP)  ## lint, format, types and the layer contracts
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: check peers  ## everything above, then the whole test suite
	$(BIN)/pytest -q --timeout 180

clean:
	rm -rf $(VENV) .wirelab .mypy_cache .ruff_cache .pytest_cache .hypothesis
