# Two commands for a fresh machine: `make demo` runs the main job, `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/activate: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[examples,test]"
	touch $(BIN)/activate

demo: $(BIN)/activate
	$(BIN)/python examples/toy_posteriors.py --output_dir=out

# -n auto: one pytest worker per core (TensorFlow alone keeps about one core busy on these tests).
test: $(BIN)/activate
	@echo "Running the test suite: about 6 minutes on 2 cores, longer on a busy machine."
	@echo "pytest-xdist prints 'bringing up nodes...', then one dot per passed test."
	$(BIN)/python -m pytest -q -n auto

lint: $(BIN)/activate
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(BIN)/activate
	$(BIN)/python bench/bench_dense.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
