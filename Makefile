# Every target builds .venv from nothing when it is missing (only python3, make and git needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/zoo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: $(BIN)/zoo
	$(BIN)/python examples/demo.py

test: $(BIN)/zoo
	$(BIN)/ruff check zoo plugins tests examples model_cards benchmarks
	ZOO_STRICT_PLUGINS=1 $(BIN)/pytest -q

# Speed, memory and load time against hand-written loops (minutes; results in benchmarks/results, docs/benchmarks.md).
bench: $(BIN)/zoo
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_paths.py

clean:
	rm -rf $(VENV) build *.egg-info
