# Every target builds .venv from nothing when it is missing (only python3, make and git needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

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

clean:
	rm -rf $(VENV) build *.egg-info
