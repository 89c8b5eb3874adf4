# Two commands for a fresh clone: `make run` (set up + start the app) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: run test setup setup-dev lint format bench bench-ui tiny clean

$(VENV)/.app: requirements.txt
	$(PYTHON) -m venv $(VENV)
	@# torch first: with it in place no other package can pull a multi-GB CUDA build on a CPU box
	$(PIP) torch==2.13.0
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.app requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

setup: $(VENV)/.app
setup-dev: $(VENV)/.dev

run: setup
	$(VENV)/bin/streamlit run app.py

test: setup-dev
	$(PY) -m pytest -q -n 3 --dist loadfile --durations=25 tests  # three workers, one test file each at a time; the slowest listed

lint: setup-dev
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

format: setup-dev
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m engine.bench --profile tiny

bench-ui: setup-dev  # the Studio in headless Chromium against the CLI's engine, side by side
	$(PY) tools/ui_bench.py

tiny: setup
	$(PY) -m engine prepare-tiny --profile tiny

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
