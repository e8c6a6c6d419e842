# hyperdnn: every target does its own set-up in a local .venv.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TORCH_VERSION)
LINT_DIRS := $(wildcard src tests benchmarks examples)

.PHONY: setup demo test lint bench bench-quick docs docs-serve clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[apps,causal,uncertainty,arch,nlp,pareto,rl,federated,docs,dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hyperdnn demo
	@echo "more: source $(VENV)/bin/activate, then hyperdnn demo --dynamic, hyperdnn run --list (or call $(VENV)/bin/hyperdnn)"

# one test worker per core, at most 4 (each holds about 1.2 GB), with pytest-xdist; a module's
# tests stay on one worker, so its module-scoped runs happen once, and the modules go out in
# the order tests/conftest.py gives; TEST_WORKERS=0 runs everything in this process
TEST_WORKERS ?= auto
test: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(PY) -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadscope --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)

bench: $(STAMP)
	$(PY) benchmarks/run.py

# a smoke run: writes to benchmarks/results/quick/, which git ignores
bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick

# the documentation site (mkdocs.yml): strict, every warning is an error; site/ is ignored by git
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache .ruff_cache
