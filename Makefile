# The two commands of the README: `make report` (the main job) and `make test` (every test).
# Both build the virtual environment when it is missing or pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: report test lint bench peers clean clean-cache

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dask]"
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/python -m ndwork.bench report

test: $(STAMP)
	$(BIN)/ruff check ndwork tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ndwork tests

bench: $(STAMP)
	$(BIN)/python -m ndwork.bench kernels
	$(BIN)/python -m ndwork.bench models

# Side-by-side runs against NeuralForecast, in their own environment (torch is never a
# dependency of ndwork and never enters `make test`).
PEERS := .venv-peers
$(PEERS)/.installed: pyproject.toml
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet -e ".[peers]"
	touch $@

peers: $(PEERS)/.installed
	$(PEERS)/bin/python -m ndwork.bench peers

# numba's on-disk cache is keyed on each function's own file, not on the kernels it calls
# from other files: after editing a shared kernel (fastmath.py), clear it.
clean-cache:
	find ndwork -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-cache
	rm -rf $(VENV) $(PEERS) results
