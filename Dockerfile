# churn-alerts worker image: `churn-worker run` as a long-lived ECS task (infra/service.yaml).
#
# Multi-stage: `build` installs the worker into a venv with pip (no TensorFlow: the worker calls
# SageMaker over HTTP); `worker` copies only that venv onto a fresh slim base and runs as an
# unprivileged user. Read-only root file system friendly: nothing is written outside /tmp (a volume;
# ECS mounts a task-scoped one there), bytecode is compiled at build time, HOME is /tmp.
# `trainer` is the monthly retraining task's image (the model extra, with TensorFlow).
#
#   make image                                     # docker build --target worker -t churn-alerts:dev .
#   docker build --target trainer -t churn-alerts-trainer:dev .
#
# Every stage starts from the same base, pinned by version: the CPython the project is developed and
# tested on (written out in each FROM so hadolint and checkov see the tag).

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY plumbing ./plumbing
COPY localaws ./localaws
COPY features ./features
COPY model ./model
COPY worker ./worker
COPY jobs ./jobs
COPY cli ./cli
# The worker only: no [model], [local] or [dev] extras, so no TensorFlow, moto or test tools.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11.7-slim-bookworm AS trainer-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY --from=build /src /src
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[model]"

FROM python:3.11.7-slim-bookworm AS trainer
RUN groupadd --system --gid 10001 churn \
    && useradd --system --uid 10001 --gid churn --home-dir /tmp --no-create-home --shell /usr/sbin/nologin churn
COPY --from=trainer-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp TMPDIR=/tmp PYTHONUNBUFFERED=1 CHURN_MODEL_CACHE=/tmp/churn-model
USER 10001:10001
WORKDIR /tmp
CMD ["churn-model", "--help"]

# The default target: the worker.
FROM python:3.11.7-slim-bookworm AS worker
RUN groupadd --system --gid 10001 churn \
    && useradd --system --uid 10001 --gid churn --home-dir /tmp --no-create-home --shell /usr/sbin/nologin churn
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHURN_HEALTH_HOST=0.0.0.0 \
    CHURN_HEALTH_PORT=8081
USER 10001:10001
WORKDIR /tmp
VOLUME ["/tmp"]
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=3)"]
CMD ["churn-worker", "run", "--json-logs"]
