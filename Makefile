# The two commands of the README: `make report` (the main job) and `make test` (every test).
# Both build the virtual environment when it is missing or pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REPORT_PARAMS ?= -p quick False

.PHONY: report test lint bench lab peers peers-test browser clean clean-cache

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dask,lab,browser]"
	touch $(STAMP)

# numba's on-disk cache is keyed on each function's own file, not on the kernels it calls
# from other files (fastmath.py, _jit.py's flags): when any kernel file changes, clear it.
KERNEL_STAMP := ndwork/kernels/__pycache__/.sources
$(KERNEL_STAMP): $(wildcard ndwork/kernels/*.py)
	find ndwork -name '*.nbi' -delete -o -name '*.nbc' -delete
	mkdir -p $(@D) && touch $@

# The benchmark notebook, executed by papermill on embedded defaults, rendered to HTML.
report: $(STAMP) $(KERNEL_STAMP)
	mkdir -p reports results
	$(BIN)/papermill notebooks/06_benchmark_report.ipynb reports/benchmark_report.ipynb \
		--cwd . --log-output $(REPORT_PARAMS)
	$(BIN)/jupyter nbconvert --to html reports/benchmark_report.ipynb --output-dir reports
	@echo "report: reports/benchmark_report.html"

# The real-browser test drives Debian's chromium: installed here when missing (as root).
browser:
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null); } || \
		echo "chromium missing and not root: the browser test will be skipped"

test: $(STAMP) $(KERNEL_STAMP) browser
	$(BIN)/ruff check ndwork widgets tests tests_peers
	$(BIN)/python -m pytest -q -p no:logging

lint: $(STAMP)
	$(BIN)/ruff check ndwork widgets tests tests_peers

bench: $(STAMP) $(KERNEL_STAMP)
	$(BIN)/python -m ndwork.bench kernels
	$(BIN)/python -m ndwork.bench models
	$(BIN)/python -m ndwork.bench attention
	$(BIN)/python -m ndwork.bench parallel

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# Side-by-side runs against NeuralForecast, in their own environment (torch is never a
# dependency of ndwork and never enters `make test`).
PEERS := .venv-peers
$(PEERS)/.installed: pyproject.toml
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet -e ".[peers,dask,dev]"
	# NeuralForecast's xLSTM imports the xlstm package; its declared dependencies are GPU
	# kernels (mlstm_kernels) and a CUDA build tool (ninja) that its CPU path never uses
	$(PEERS)/bin/python -m pip install --quiet --no-deps "xlstm==2.0.6"
	touch $@

peers: $(PEERS)/.installed
	$(PEERS)/bin/python -m ndwork.bench peers

# Tests beside NeuralForecast (checkpoint interop, a tutorial script run by both)
peers-test: $(PEERS)/.installed
	$(PEERS)/bin/python -m pytest -q -p no:cacheprovider tests_peers

clean-cache:
	find ndwork -name '*.nbi' -delete -o -name '*.nbc' -delete
	rm -f $(KERNEL_STAMP)

clean: clean-cache
	rm -rf $(VENV) $(PEERS) results reports
