#!/usr/bin/env bash
# One prepared GPU check (see eval/gpu_check.py): installs what is missing, then reports encoding tokens/s
# and MFU (padded vs varlen, bf16, short and long mixed lengths), dense search (faiss CPU vs faiss-gpu / torch
# CUDA) and PLAID search (CPU vs CUDA) into runs/gpu_check/gpu_check.{json,md}.
#
#   bash eval/gpu_check.sh                     # from the repository root, on a CUDA machine
#   bash eval/gpu_check.sh --smoke --cpu       # the CPU smoke run (what CI checks through pytest)
#   NO_INSTALL=1 bash eval/gpu_check.sh        # use the environment as it is
#
# Every install step may fail (no network, no compiler): the check then runs with what there is
# (SDPA instead of flash-attn, torch matmul instead of faiss-gpu) and says so in the report.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
log() { echo "[gpu_check] $*" >&2; }
has() { "$PY" -c "import $1" >/dev/null 2>&1; }

if [ -z "${NO_INSTALL:-}" ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    has torch && log "torch sees no CUDA device: keeping it" \
              || { log "installing torch 2.13.0 (the PyPI Linux build is the CUDA one)"; "$PY" -m pip install -q "torch==2.13.0" || log "torch install failed"; }
  fi
  # the project with its pinned dependencies (torch is already there, so nothing replaces it)
  # (offline: the project alone, its dependencies as they are)
  has mbert_retrieval || "$PY" -m pip install -q -c constraints.txt -e . \
    || "$PY" -m pip install -q --no-deps --no-build-isolation -e . || log "project install failed"
  has faiss || "$PY" -m pip install -q "faiss-gpu-cu12>=1.8" || "$PY" -m pip install -q -c constraints.txt faiss-cpu \
            || log "no faiss: the dense section reports the error"
  if ! has flash_attn && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    # flash-attn compiles against this torch (or fetches a matching prebuilt wheel): bounded, SDPA otherwise
    log "trying flash-attn (at most ${FLASH_ATTN_TIMEOUT:-300} s)"
    MAX_JOBS=${MAX_JOBS:-8} timeout "${FLASH_ATTN_TIMEOUT:-300}" "$PY" -m pip install -q --no-build-isolation flash-attn \
      || log "flash-attn did not install: varlen rows run as packed SDPA rows"
  fi
fi
exec "$PY" -m mbert_retrieval.eval.gpu_check "$@"
