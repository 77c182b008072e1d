# Two commands for a fresh machine: `make demo` runs the main job, `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint docs bench check-wheel clean

$(BIN)/activate: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[examples,test]"
	touch $(BIN)/activate

demo: $(BIN)/activate
	$(BIN)/python examples/toy_posteriors.py --output_dir=out

# -n auto: one pytest worker per core (TensorFlow alone keeps about one core busy on these tests).
# `make test` is the main suite: every test but those marked `slow` (end-to-end runs of the
# examples, fits, XLA compiles and SavedModels, statistical checks, the docs' tutorials, and the
# cases beyond a few representatives of matrices whose every case trains or compiles), which
# `make test-slow` runs. CI (.ci/run) runs both. `-m` is given here, not in pyproject.toml's
# addopts, so that `pytest path::test` runs any test, slow or not.
test: $(BIN)/activate
	@echo "Running the test suite (the slow tier aside: make test-slow): about 7 minutes on 2 cores, longer on a busy machine."
	@echo "pytest-xdist prints 'bringing up nodes...', then one dot per passed test."
	$(BIN)/python -m pytest -q -n auto -m "not slow"

test-slow: $(BIN)/activate
	@echo "Running the slow tier of the test suite: about 15 minutes on 2 cores, longer on a busy machine."
	@echo "pytest-xdist prints 'bringing up nodes...', then one dot per passed test."
	$(BIN)/python -m pytest -q -n auto -m slow

lint: $(BIN)/activate
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The documentation site, offline, into site/; --strict: any warning fails the build.
# NO_MKDOCS_2_WARNING: mkdocs-material's end-of-life banner, printed on every build.
docs: $(BIN)/activate
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The built wheel installed beside the oldest and the newest supported TensorFlow, run from
# outside the repository (.ci/check_wheel.sh).
check-wheel: $(BIN)/activate
	PYTHON=$(PYTHON) bash .ci/check_wheel.sh

bench: $(BIN)/activate
	$(BIN)/python -m bench.bench_dense

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build dist site
