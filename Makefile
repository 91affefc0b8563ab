# Every target works on a fresh machine with only python3 (>= 3.11) and make:
# it creates .venv if missing and installs what the project declares, then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench faults install clean

run: $(STAMP)
	$(VENV)/bin/churn-worker local

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check features model worker localaws tests bench
	$(VENV)/bin/mypy features worker

bench: $(STAMP)
	$(PY) bench/run_all.py

# The fault-injection suite alone (also part of `make test`): real workers, faults injected by a
# proxy and kill points, a table of figures at the end. FAULTS_K=name runs matching scenarios only;
# FAULTS_REPORT=file also writes the table there; FAULTS_OUTAGE_SECONDS=300 a longer endpoint outage.
faults: $(STAMP)
	$(PY) -m pytest tests/faults -m faults $(if $(FAULTS_K),-k "$(FAULTS_K)")

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[model,local,dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
