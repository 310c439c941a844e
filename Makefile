# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs into .venv, pinned by
# constraints.txt: `make demo` serving, the embedded broker and the export side that builds the default bundle
# (espeak-ng for the sample call); `make test` adds the rest (test and lint tools, MMSA, evaluation, the rebuild
# recipe, Chromium). A stamp per flavour: `make test` after `make demo` adds only the rest, `make demo` after
# `make test` installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q --disable-pip-version-check -c constraints.txt
# The extras of each flavour (tests/deploy/test_install_profiles.py resolves these and checks what they hold).
DEMO_EXTRAS := demo,train
TEST_EXTRAS := dev
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test setup setup-demo setup-test bundle model bench lint constraints clean

demo: setup-demo bundle
	$(BIN)/affectstream demo

test: setup-test bundle
	$(BIN)/pytest -q -p no:cacheprovider

setup: setup-test
setup-demo: $(DEMO_STAMP)
setup-test: $(TEST_STAMP)

# torch comes first and pinned so that nothing pulls another (CUDA) torch; MMSA (the reference implementation
# our parity tests run against) is installed without its dependencies for the same reason.
$(DEMO_STAMP): pyproject.toml constraints.txt scripts/setup-system.sh
	scripts/setup-system.sh demo
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[$(DEMO_EXTRAS)]'
	touch $@

$(TEST_STAMP): $(DEMO_STAMP)
	scripts/setup-system.sh test
	$(PIP) -e '.[$(TEST_EXTRAS)]'
	$(PIP) --no-deps MMSA==2.2.1
	touch $@

# The default sentiment bundle is exported from the small committed checkpoint (never retrained here).
bundle: setup-demo
	$(BIN)/affectstream model bundle

# Rebuild the default model from scratch (offline; see README "Default model").
model: setup-test
	$(BIN)/affectstream model build

bench: setup-test bundle
	$(BIN)/python -m bench.run_all

lint: setup-test
	$(BIN)/ruff check core agent models exporters default_model cli tests bench
	$(BIN)/mypy core agent models exporters default_model cli

# Re-pin constraints.txt from the test venv, after a dependency was added or changed in pyproject.toml (the
# setup installs it, newest allowed version where constraints.txt has no pin yet) or a pin was moved by hand
# (`.venv/bin/pip install NAME==VERSION`). Then run `make test` and commit both files.
constraints: setup-test
	$(BIN)/python scripts/freeze_constraints.py > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(DEMO_STAMP) $(TEST_STAMP)

clean:
	rm -rf $(VENV) .affectstream
