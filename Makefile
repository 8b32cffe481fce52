# Every target builds .venv from nothing when it is missing (only python3, make and git needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

PYTHAE_VENV := benchmarks/.pythae-venv

.PHONY: demo test lint bench bench-pythae-env gpu-wheels gpu-aside gpu-back clean

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

# A borrowed GPU machine (benchmarks/gpu_checks.py; CONTRIBUTING.md, "GPU checks"). gpu-wheels: what its image
# lacks, as Python 3.12 wheels in .whl (git-ignored through .git/info/exclude). gpu-aside: the device tool takes at
# most 64 MiB of working tree and the model cards' weights are over 100 MB, so they wait in ../gpu-aside during
# the call (all but vae-mnist's, which bench.py loads); gpu-back puts them back.
gpu-wheels:
	grep -qxF '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
	rm -rf .whl
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-q -d .whl diffusers==0.42.1 mlxtend==0.25.0 importlib_metadata==10.2.0

gpu-aside:
	for f in model_cards/*/model.safetensors; do \
		[ "$$f" = model_cards/vae-mnist/model.safetensors ] || { mkdir -p "../gpu-aside/$$(dirname $$f)" && mv "$$f" "../gpu-aside/$$f"; }; \
	done

gpu-back:
	cd ../gpu-aside && for f in model_cards/*/model.safetensors; do mv "$$f" "$(CURDIR)/$$f"; done
	git status --short model_cards

clean:
	rm -rf $(VENV) $(PYTHAE_VENV) build *.egg-info
