# hostward: `make run` brings up a local manager + agent, `make test` runs the whole suite.
# Both create .venv and install the project (with its test extras) first when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hostward-installed
PYTEST_ARGS ?=
UP_ARGS ?=
BENCH_ARGS ?=

.PHONY: install run test lint bench clean

install: $(STAMP)

# Re-installs only when pyproject.toml or the C accelerators change (or the venv is new).
$(STAMP): pyproject.toml setup.py $(wildcard src/native/*.c)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $@

run: install
	$(BIN)/hostward up $(UP_ARGS)

# pytest exit status 5 means "no tests collected": a failure here, with a message that says so.
test: install
	@echo "$(BIN)/python -m pytest $(PYTEST_ARGS)"; rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; fi; \
	exit $$rc

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	@set -e; found=0; for f in bench/*.py; do \
		[ -f "$$f" ] || continue; \
		case "$$(basename $$f)" in _*) continue;; esac; \
		found=1; echo "== $$f"; $(BIN)/python "$$f" $(BENCH_ARGS); \
	done; [ $$found = 1 ] || echo "no benchmarks under bench/"

# Removes build outputs, caches and the virtualenv; never the manager data in .hostward/.
clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
	find . -name __pycache__ -type d -prune -not -path './.hostward/*' -exec rm -rf {} +
