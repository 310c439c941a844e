# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup bundle model bench lint clean

demo: setup bundle
	$(BIN)/affectstream demo

test: setup bundle
	$(BIN)/pytest -q -p no:cacheprovider

setup: $(STAMP)

# torch comes first and pinned so that nothing pulls another (CUDA) torch; MMSA (the reference implementation
# our parity tests run against) is installed without its dependencies for the same reason.
$(STAMP): pyproject.toml scripts/setup-system.sh
	scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 -e '.[train,dev]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps MMSA==2.2.1
	touch $(STAMP)

# The default sentiment bundle is exported from the small committed checkpoint (never retrained here).
bundle: setup
	$(BIN)/affectstream model bundle

# Rebuild the default model from scratch (offline; see README "Default model").
model: setup
	$(BIN)/affectstream model build

bench: setup bundle
	$(BIN)/python -m bench.run_all

lint: setup
	$(BIN)/ruff check core agent models exporters default_model cli tests bench
	$(BIN)/mypy core agent models exporters default_model cli

clean:
	rm -rf $(VENV) .affectstream
