#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU and a CUDA build of torch (install it before
# `pip install -e ".[test]"`, as the README says). Three parts:
#   1. the CUDA-marked tests (deselected in every other run), under CI=true so that a machine
#      without a usable GPU fails instead of skipping; then a trial checkpointed on the CPU
#      resumed by a GPU worker, and CPU/GPU prediction parity (scripts/device_handoff.py);
#   2. the report's HeteroCell (report defaults, no SGA roles) on the real data, trained on CUDA
#      with mixed precision for GPU_CHECK_MINUTES (10) minutes, beside a short run of the same
#      model on the CPU; prints train records/s of both, their ratio and the peak GPU memory.
# Usage: bash scripts/gpu-check.sh [DATA_DIR]        (default: ../shared/data)
# Tunables: GPU_CHECK_MINUTES=10 GPU_CHECK_SUBSET=25000 GPU_CHECK_CPU_SUBSET=200
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data}"
minutes="${GPU_CHECK_MINUTES:-10}"
subset="${GPU_CHECK_SUBSET:-25000}"
cpu_subset="${GPU_CHECK_CPU_SUBSET:-200}"
logs="$(mktemp -d)"
run=(python -m torchcell_search.cli)

python - <<'PY' || { echo "gpu-check: no CUDA device is visible to torch; run this on a GPU machine" >&2; exit 1; }
import sys, torch
ok = torch.cuda.is_available()
print(f"gpu-check: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0) if ok else 'no GPU'}")
sys.exit(0 if ok else 1)
PY

echo "== 1. CUDA tests: python -m pytest -q -m cuda tests"
CI=true python -m pytest -q -m cuda tests

# 1b. One checkpoint, any device, through the command line: a study with --device auto; a
# worker on a CPU node (CUDA_VISIBLE_DEVICES="") is preempted after its first epoch checkpoint,
# a worker here picks the trial up on the GPU and finishes it; then predict --device cpu and
# --device cuda agree on the trial's val pairs within 1e-4 (the README's tolerance).
echo "== 1b. CPU -> GPU hand-off and CPU/GPU prediction parity: python scripts/device_handoff.py"
python scripts/device_handoff.py "$logs/handoff"

# The report's model: its defaults (64 wide, 3 layers, sorted set transformer pooling, batch 32)
# and no SGA roles; the pair split; a subset of the report's size.
model=(--split pair --set model.use_roles=false)
echo "== 2a. CUDA, mixed precision, ${minutes} min: train --data $data --subset $subset ${model[*]} --device cuda"
set +e
timeout --signal=INT --kill-after=60 "${minutes}m" "${run[@]}" train --data "$data" --subset "$subset" \
    --epochs 1000 "${model[@]}" --device cuda | tee "$logs/cuda.txt"
echo "== 2b. CPU reference (1 thread, one epoch): train --data $data --subset $cpu_subset ${model[*]} --device cpu"
timeout --signal=INT --kill-after=60 30m "${run[@]}" --threads 1 train --data "$data" --subset "$cpu_subset" \
    --epochs 1 "${model[@]}" --device cpu | tee "$logs/cpu.txt"
set -e

python - "$logs/cuda.txt" "$logs/cpu.txt" <<'PY'
import math, sys

def rows(path):
    """(records/s, peak GPU GiB) of each epoch row of a `train` table: its last two columns."""
    out = []
    for line in open(path).read().splitlines():
        parts = line.split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            continue  # the header, progress and summary lines
        if len(values) > 3 and parts[0].isdigit():
            out.append((values[-2], values[-1]))
    return out

cuda, cpu = rows(sys.argv[1]), rows(sys.argv[2])
if not cuda:
    sys.exit("gpu-check: the CUDA run finished no epoch within the time limit")
gpu_rate, cpu_rate = max(r for r, _ in cuda), (cpu[0][0] if cpu else math.nan)
print(f"gpu-check: CUDA, mixed precision: {gpu_rate:.1f} train records/s (best of {len(cuda)} epoch(s)); "
      f"CPU, 1 thread: {cpu_rate:.2f} records/s; ratio {gpu_rate / cpu_rate:.1f}x; "
      f"peak GPU memory allocated by torch: {max(g for _, g in cuda):.2f} GiB")
PY

# 3. The HeteroCell train step on CUDA: the report's configurations on the real graph (16 wide;
# 64 wide, 3 layers, heads 1/5/10, attentional and sorted-set-transformer pooling), ours
# against the reference layout (a PyG Batch of perturbed graphs, this tree's layers) alternating
# in one process per row; median and spread of each, ratio, peak GPU memory, and the fraction of
# a roofline from this GPU's measured float32 matmul and copy rates. Then one GATv2 conv, ours
# against PyG's GATv2Conv. Figures go in the README's Performance section beside the CPU rows.
echo "== 3. python benchmarks/bench_model.py --no-demo --device cuda --real-data $data --batch 32 --real-ref-batch 32"
python benchmarks/bench_model.py --no-demo --device cuda --real-data "$data" --batch 32 --real-ref-batch 32 \
    --real-repeats 5
