# Two commands a fresh clone needs:  `make up` runs the service, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test check peers bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

up: $(STAMP)  ## run the Job Status service on embedded defaults (127.0.0.1:8000)
	$(BIN)/wirelab up

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
