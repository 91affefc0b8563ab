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

.PHONY: run test lint bench install clean image serving-check

run: $(STAMP)
	$(VENV)/bin/churn-worker local

# The serving venv first, so the serving-compatibility test runs rather than skips.
test: $(STAMP) $(SERVING_STAMP)
	$(PY) -m pytest

lint: $(STAMP) $(TOOLS_STAMP)
	$(VENV)/bin/ruff check features model worker tests bench infra
	$(VENV)/bin/mypy features worker
	$(TOOLS)/bin/cfn-lint infra/*.yaml
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(TOOLS)/bin/python infra/checkov_all.py infra/*.yaml Dockerfile
	@if [ -x $(TOOLS)/bin/hadolint ]; then $(TOOLS)/bin/hadolint Dockerfile; \
	 else echo "hadolint not installed: Dockerfile not linted"; fi

bench: $(STAMP)
	$(PY) bench/run_all.py

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
