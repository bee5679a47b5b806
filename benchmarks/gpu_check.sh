#!/usr/bin/env bash
# Check and time lstmlab's GPU paths on a machine with a CUDA device, in phases that each fit a short lease:
#
#   bash benchmarks/gpu_check.sh OUTDIR tests    the CUDA tests of the kernels, then a packed study on CUDA against
#                                                the same study with --pack 1 (float32: equal to rounding)
#   bash benchmarks/gpu_check.sh OUTDIR layers   lstmlab bench on CUDA: every layer shape, float32 and bfloat16,
#                                                Triton (per-step and persistent) vs cuDNN's nn.LSTM
#   bash benchmarks/gpu_check.sh OUTDIR study    lstmlab bench --pack 10 (stacked layer) and --study (whole study)
#
# Run it from the repository root with lstmlab importable (pip install -e ., or PYTHONPATH=.); each phase writes its
# output under OUTDIR (NAME.out: stdout, a bench's JSON rows; NAME.err: stderr) and prints a short summary
# last. Every command has its own time limit.
set -u
out=${1:?usage: gpu_check.sh OUTDIR tests|layers|study}
phase=${2:?usage: gpu_check.sh OUTDIR tests|layers|study}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 LSTMLAB_CACHE_DIR=${LSTMLAB_CACHE_DIR:-/tmp/lstmlab-cache}
work=$(mktemp -d)
summary="$out/summary-$phase.txt"

step() {  # step NAME SECONDS COMMAND...: run it with a limit, stdout in OUTDIR/NAME.out, stderr in NAME.err
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.out" 2>"$out/$name.err"
  rc=$?
  echo "$name: exit $rc in $(($(date +%s) - start)) s" | tee -a "$summary"
  tail -n 3 "$out/$name.err"
  tail -n 4 "$out/$name.out" | cut -c1-300
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
      'device', torch.cuda.get_device_name(), 'cpus', __import__('os').cpu_count())"
} | tee -a "$summary"

study_shapes=(--shape 30,64,2,23 --shape 30,64,23,23 --shape 100,64,2,69 --shape 100,64,69,69 --shape 100,64,10,49
  --shape 200,32,2,64 --shape 100,32,100,100)

case $phase in
tests)
  step kernel-tests 240 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_kernels.py tests/test_packed.py \
    tests/test_lstm.py
  # The same 6-run study on CUDA, packed (one pack per depth) and one run at a time: the members must match.
  common=(configs/quickstart.yaml --set train.steps=400 --sweep train.seed=0,1,2 --data-dir "$work/data" -q)
  step cuda-packed 120 python3 -m lstmlab train "${common[@]}" --pack auto --runs-dir "$work/packed"
  step cuda-unpacked 180 python3 -m lstmlab train "${common[@]}" --pack 1 --runs-dir "$work/unpacked"
  python3 - "$work" <<'EOF' | tee -a "$summary"
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
worst = 0.0
for packed in sorted((root / "packed").glob("*/*/summary.json")):
    alone = root / "unpacked" / packed.parent.parent.name / packed.parent.name / "summary.json"
    a, b = json.loads(packed.read_text()), json.loads(alone.read_text())
    rel = abs(a["test_metric"] - b["test_metric"]) / abs(b["test_metric"])
    worst = max(worst, rel)
    print(f"{packed.parent.name}: {a['status']} backend {a['backend']} on {a['device']}, test {a['test_metric']:.6g} "
          f"packed vs {b['test_metric']:.6g} alone (relative difference {rel:.1e})")
print(f"largest relative difference, packed vs alone: {worst:.1e}")
EOF
  ;;
layers)
  step bench-layers 300 python3 -m lstmlab bench --device cuda --dtype float32 --dtype bfloat16 \
    --impl triton --impl nn.LSTM --impl fused --reps 21 --json
  step bench-persistent 150 env LSTMLAB_TRITON_PERSISTENT=1 python3 -m lstmlab bench --device cuda --dtype float32 \
    --dtype bfloat16 --impl triton --impl nn.LSTM "${study_shapes[@]}" --reps 21 --json
  ;;
study)
  step bench-pack 150 python3 -m lstmlab bench --device cuda --dtype float32 --pack 10 "${study_shapes[@]}" \
    --reps 11 --json
  step bench-study 400 python3 -m lstmlab bench --study configs/quickstart.yaml --sweep train.seed=0,1,2,3,4,5,6,7,8,9 \
    --jobs 2 --data-dir "$work/data" --json
  ;;
*)
  echo "unknown phase $phase (tests, layers or study)" >&2
  exit 2
  ;;
esac
rm -rf "$work"
cat "$summary"
