#!/usr/bin/env bash
# The whole GPU measurement of issue 13 in one go (< 8 min): paper and edge with random weights, eager vs
# torch.compile vs CUDA graphs, batch-1 p50/p99 and throughput at batch 8/32, written to JSON.
#   bench/gpu.sh [out.json]          (default gpu-results.json; PYTHON overrides the interpreter)
# Without a CUDA device it runs a tiny CPU fallback, so the script can be checked anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-results.json}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
# 420 s of runs at most (--budget-s), then the run in progress finishes; the hard stop is 8 minutes
timeout 480 "$python" -m bench.gpu --json "$out" --budget-s 420
