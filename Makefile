# Every target works on a fresh machine with only python3 (>= 3.11) and make:
# it creates .venv if missing and installs what the project declares, then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Linters for infra/ and the Dockerfile live in a venv of their own: checkov pins boto3/botocore 1.35
# and packaging 23, which would downgrade what aiobotocore needs in .venv.
TOOLS       := .tools
TOOLS_STAMP := $(TOOLS)/.installed
# The TensorFlow inside the TF Serving image `churn-model deploy` uses (model/deploy.py
# SERVING_TENSORFLOW), in a venv of its own, for tests/functional/test_infra_serving.py.
SERVING_TF    := 2.20.0
SERVING_VENV  := .serving-tf$(SERVING_TF)
SERVING_STAMP := $(SERVING_VENV)/.installed
IMAGE ?= churn-alerts:dev

.PHONY: run test check lint bench faults install clean image serving-check

run: $(STAMP)
	$(VENV)/bin/churn-worker local

# Tests run in parallel processes (pytest-xdist). Most of them wait on moto, child processes or
# timers rather than compute, so `make test` runs more processes than the two cores; `make check`
# is mostly compute. The fault scenarios stay together, in order, on one process (--dist
# loadgroup, tests/conftest.py). TEST_WORKERS=0 / CHECK_WORKERS=0 run in this process.
TEST_WORKERS  ?= 3
CHECK_WORKERS ?= 2

# Everything: unit, functional, end-to-end and the fault suite; the 20 slowest tests at the end.
# The serving venv first, so the serving-compatibility test runs rather than skips.
test: $(STAMP) $(SERVING_STAMP)
	$(PY) -m pytest --durations=20 -n $(TEST_WORKERS) --dist loadgroup

# The fast loop while you work: the import contract, then unit and functional tests without the
# slow ones (no model training, no whole processes), stopping at the first failure.
check: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not slow" -x -q -n $(CHECK_WORKERS) --dist loadgroup tests/unit tests/functional

SOURCES := plumbing localaws features model worker jobs cli tests bench infra

lint: $(STAMP) $(TOOLS_STAMP)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy plumbing features model worker jobs cli
	$(TOOLS)/bin/cfn-lint infra/*.yaml
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(TOOLS)/bin/python infra/checkov_all.py infra/*.yaml Dockerfile
	@if [ -x $(TOOLS)/bin/hadolint ]; then $(TOOLS)/bin/hadolint Dockerfile; \
	 else echo "hadolint not installed: Dockerfile not linted"; fi

bench: $(STAMP)
	$(PY) bench/run_all.py

# The fault-injection suite alone (also part of `make test`): real workers, faults injected by a
# proxy and kill points, a table of figures at the end. FAULTS_K=name runs matching scenarios only;
# FAULTS_REPORT=file also writes the table there; FAULTS_OUTAGE_SECONDS=300 a longer endpoint outage.
faults: $(STAMP)
	$(PY) -m pytest tests/faults -m faults $(if $(FAULTS_K),-k "$(FAULTS_K)")

install: $(STAMP)

# The worker image (Dockerfile): needs a Docker daemon, which CI and the dev machines do not have;
# `make lint` checks the Dockerfile and tests/functional/test_infra_image.py its properties.
image:
	docker build --target worker -t $(IMAGE) .

serving-check: $(STAMP) $(SERVING_STAMP)
	$(PY) -m pytest -q tests/functional/test_infra_serving.py

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[model,local,dev]'
	touch $(STAMP)

$(TOOLS_STAMP): infra/lint-requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet -r infra/lint-requirements.txt
	touch $(TOOLS_STAMP)

$(SERVING_STAMP):
	$(PYTHON) -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/pip install --quiet tensorflow-cpu==$(SERVING_TF)
	touch $(SERVING_STAMP)

clean:
	rm -rf $(VENV) $(TOOLS) $(SERVING_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
