# release-rollback: `make demo` rolls a local fleet back end to end; `make test` installs what the
# tests need (.ci/test-deps: Debian packages, npm, extracted binaries; root or sudo) and runs lint
# and the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The product alone (what `make demo` needs), and the product with the test toolchain.
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-deps lint ruff ansible-lint review sanity unit stateful venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(TEST_STAMP)

venv: $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/release-rollback demo $(DEMO_ARGS)

# Debian packages, npm and extracted binaries the tests use; idempotent (see the script's header).
test-deps:
	.ci/test-deps

# The four checks run at once, each one's output printed whole when it ends: ansible-lint, the review
# and sanity each keep one core busy for 2-4 minutes, one after the other they took 7.5.
lint: $(TEST_STAMP)
	$(MAKE) --no-print-directory -j4 --output-sync=target ruff ansible-lint review sanity

ruff: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check driver tests bench

ansible-lint: $(TEST_STAMP)
	ANSIBLE_HOME=$(CURDIR)/.ansible-home XDG_CACHE_HOME=$(CURDIR)/.ansible-home/cache \
		$(BIN)/ansible-lint

# The certified-content review alone: galaxy-importer, antsibull-docs and antsibull-changelog lint.
review: $(TEST_STAMP)
	BIN=$(abspath $(BIN)) .ci/review

# ansible-test sanity alone (offline; the first run installs its test environments, ~3 min).
sanity: $(TEST_STAMP)
	BIN=$(abspath $(BIN)) .ci/sanity

# Every core runs tests (pytest-xdist); a file's tests stay on one worker so its fleet is shared.
test: test-deps lint
	$(BIN)/pytest -q -n auto --dist loadfile --durations=15

unit: $(TEST_STAMP)
	$(BIN)/pytest -q tests/unit

# The lifecycle's stateful property test, searching longer than `make test` does (random operator
# sequences against a real local fleet; promises 1-6 checked after every step).
stateful: $(TEST_STAMP)
	RELEASE_ROLLBACK_STATEFUL_EXAMPLES=$${EXAMPLES:-25} RELEASE_ROLLBACK_STATEFUL_STEPS=$${STEPS:-15} \
		$(BIN)/pytest -q tests/e2e/test_lifecycle_stateful.py

clean:
	rm -rf $(VENV) .ansible-home .rollback .pytest_cache build dist
