# Every target builds .venv from nothing when it is missing (only python3, make and git needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

PYTHAE_VENV := benchmarks/.pythae-venv

.PHONY: demo test lint bench bench-pythae-env clean

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

# Speed, memory and load time against hand-written loops and pythae, the training loop's own cost per step,
# and zoo explore's slider against a bare decode (minutes; results in benchmarks/results, docs/benchmarks.md).
bench: $(BIN)/zoo
	$(MAKE) bench-pythae-env || echo "pythae could not be installed: bench.py runs without it"
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_paths.py
	$(BIN)/python benchmarks/bench_diffusers.py
	$(BIN)/python benchmarks/bench_explore.py
	$(BIN)/python benchmarks/bench_overhead.py

# pythae in an environment of its own, with the zoo's torch: it is not a dependency of the zoo (it
# saves models with cloudpickle and installs the old `dataclasses` backport). bench.py skips pythae,
# and says so, where this environment could not be built.
bench-pythae-env: $(PYTHAE_VENV)/bin/pythae-installed

$(PYTHAE_VENV)/bin/pythae-installed: $(BIN)/zoo
	$(PYTHON) -m venv $(PYTHAE_VENV)
	$(PYTHAE_VENV)/bin/pip install pythae "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])')"
	touch $@

clean:
	rm -rf $(VENV) $(PYTHAE_VENV) build *.egg-info
