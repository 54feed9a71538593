# release-rollback: `make demo` rolls a local fleet back end to end; `make test` runs lint and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint sanity unit venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/release-rollback demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check driver tests
	ANSIBLE_HOME=$(CURDIR)/.ansible-home XDG_CACHE_HOME=$(CURDIR)/.ansible-home/cache \
		$(BIN)/ansible-lint
	BIN=$(abspath $(BIN)) .ci/sanity

# ansible-test sanity alone (offline; the first run installs its test environments, ~3 min).
sanity: $(STAMP)
	BIN=$(abspath $(BIN)) .ci/sanity

test: lint
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

clean:
	rm -rf $(VENV) .ansible-home .rollback .pytest_cache build dist
