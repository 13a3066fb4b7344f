# syntax=docker/dockerfile:1
# espresso image:  docker build -t espresso:0.1.0 .
# The build context is only what .dockerignore lets through (pyproject.toml, README.md and
# the five packages). Pin the base image by digest in your CI for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: wheels of espresso and of every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
# bytewax, confluent-kafka (librdkafka inside), orjson, pydantic-core and xxhash all ship
# manylinux wheels: no compiler needed.
RUN pip wheel --wheel-dir /wheels .

# -- runtime: a venv installed from those wheels only, run as a non-root user -----------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/espresso/bin:$PATH
RUN groupadd --system --gid 10001 espresso \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin espresso
# Bytecode is compiled here: the root filesystem is read-only at run time.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/espresso \
 && /opt/espresso/bin/pip install --no-index --find-links=/wheels espresso \
 && /opt/espresso/bin/python -m compileall -q /opt/espresso
USER 10001:10001
# /metrics, /livez and /readyz (metrics/server.py); Bytewax peers use 9999 (k8s/base).
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/livez', timeout=2)"]
ENTRYPOINT ["espresso"]
CMD ["run"]
