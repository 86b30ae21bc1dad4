#!/usr/bin/env bash
# HeteroCell on CUDA: the CUDA-marked layer tests, then the real-graph rows of
# benchmarks/bench_model.py (the report's configurations: 16 wide; 64 wide, 3 layers,
# heads 1/5/10, attentional and sorted-set-transformer pooling), ours against the
# reference layout (a PyG Batch of perturbed graphs) alternating in one process per row,
# with peak GPU memory and the roofline fraction against this GPU's measured matmul and
# copy rates. Not yet run on a GPU (no GPU machine was available when it was written).
#
# Usage: scripts/gpu-bench.sh [DATA_DIR] [extra bench_model.py flags]
#   DATA_DIR defaults to ../shared/data (the real data mirror beside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
shift || true
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    print("gpu-bench.sh: no CUDA device visible to torch", file=sys.stderr)
    sys.exit(2)
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
python -m pytest -q -m cuda tests/model/test_layers.py
# Batch 32 for ours as on CPU; the reference at 32 too (a GPU has the memory for it).
python benchmarks/bench_model.py --no-demo --device cuda --real-data "$DATA" \
    --batch 32 --real-ref-batch 32 --real-repeats 5 "$@"
