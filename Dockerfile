# syntax=docker/dockerfile:1.7
# One image for every labelloop service; the pod's arguments choose the service:
#   docker build -t labelloop:0.1.0 .                      # CPU (default target)
#   docker build --target gpu -t labelloop:0.1.0-gpu .     # CUDA torch + onnxruntime-gpu
#   docker run labelloop:0.1.0 serve --service ingest       # default: serve --service api
#   docker run labelloop:0.1.0 db upgrade                   # Alembic migrations
# GPU nodes need only the NVIDIA driver: the CUDA libraries come in the torch and
# onnxruntime-gpu wheels.

ARG PYTHON_VERSION=3.11

# ---- build: a virtual environment at the path it keeps in the runtime image ------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build-base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/labelloop && /opt/labelloop/bin/pip install --upgrade pip
WORKDIR /src
# The product only: tools/ (the demo, benchmarks and synthetic data) and samples/ stay out.
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY labelloop labelloop
COPY services services

FROM build-base AS build-cpu
# PyTorch's CPU-only wheels: ~5x smaller than PyPI's CUDA build, which a CPU node cannot use.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/labelloop/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" \
        ".[postgres,serving,trainer]"

FROM build-base AS build-gpu
# onnxruntime and onnxruntime-gpu install the same package: keep only the GPU build.
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/labelloop/bin/pip install ".[postgres,serving,trainer,gpu]" \
    && /opt/labelloop/bin/pip uninstall --yes onnxruntime onnxruntime-gpu \
    && /opt/labelloop/bin/pip install --no-deps "onnxruntime-gpu>=1.19"

# ---- runtime ------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime-base
# tini reaps the training runs' child processes and forwards SIGTERM to the service.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 labelloop \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin labelloop \
    && mkdir -p /var/lib/labelloop \
    && chown 10001:10001 /var/lib/labelloop
# The root filesystem is read-only in the cluster: everything written goes to /tmp or
# LABELLOOP_VAR_DIR (both emptyDir volumes there).
ENV PATH=/opt/labelloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    LABELLOOP_VAR_DIR=/var/lib/labelloop \
    LABELLOOP_CACHE_DIR=/tmp/labelloop-cache \
    LABELLOOP_API_HOST=0.0.0.0 \
    LABELLOOP_ENVIRONMENT=cluster \
    LABELLOOP_API_PORT=8080 \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch
WORKDIR /var/lib/labelloop
EXPOSE 8080
USER 10001:10001
ENTRYPOINT ["tini", "--", "labelloop"]
CMD ["serve", "--service", "api"]

FROM runtime-base AS gpu
COPY --from=build-gpu /opt/labelloop /opt/labelloop

# The default target (last stage): CPU.
FROM runtime-base AS cpu
COPY --from=build-cpu /opt/labelloop /opt/labelloop
