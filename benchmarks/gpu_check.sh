#!/usr/bin/env bash
# Check and time lstmlab's GPU paths on a machine with a CUDA device, in phases that each fit a short lease:
#
#   bash benchmarks/gpu_check.sh OUTDIR tests    the CUDA tests of the kernels, then a packed study on CUDA against
#                                                the same study with --pack 1 (float32: equal to rounding)
#   bash benchmarks/gpu_check.sh OUTDIR layers   lstmlab bench on CUDA: every layer shape, float32 and bfloat16,
#                                                Triton (default, then per-step only) vs cuDNN's nn.LSTM
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
  step kernel-tests 150 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_kernels.py tests/test_packed.py \
    tests/test_lstm.py
  # The quickstart at 3 seeds (9 runs) on CUDA, packed (one pack per depth) and one run at a time: in float64 (fused, on
  # CUDA through torch's kernels) every member must equal its run alone; in float32 (Triton) they agree to rounding
  # at first and may then drift apart as rounding differences grow over training (as on the CPU in float32).
  common=(configs/quickstart.yaml --set train.steps=400 --sweep train.seed=0,1,2 --data-dir "$work/data" -q)
  float64=(--set train.dtype=float64 --set model.backend=fused)
  step cuda-f64-packed 100 python3 -m lstmlab train "${common[@]}" "${float64[@]}" --pack auto --runs-dir "$work/p64"
  step cuda-f64-alone 150 python3 -m lstmlab train "${common[@]}" "${float64[@]}" --pack 1 --runs-dir "$work/u64"
  step cuda-f32-packed 60 python3 -m lstmlab train "${common[@]}" --pack auto --runs-dir "$work/p32"
  step cuda-f32-alone 100 python3 -m lstmlab train "${common[@]}" --pack 1 --runs-dir "$work/u32"
  for precision in 64 32; do
    python3 benchmarks/packed_vs_alone.py "$work/p$precision" "$work/u$precision" | tee -a "$summary"
  done
  ;;
layers)
  step bench-layers 300 python3 -m lstmlab bench --device cuda --dtype float32 --dtype bfloat16 \
    --impl triton --impl nn.LSTM --impl fused --reps 21 --json
  step bench-per-step 150 env LSTMLAB_TRITON_PERSISTENT=0 python3 -m lstmlab bench --device cuda --dtype float32 \
    --dtype bfloat16 --impl triton --impl nn.LSTM "${study_shapes[@]}" --reps 21 --json
  ;;
study)
  step bench-pack 150 python3 -m lstmlab bench --device cuda --dtype float32 --dtype bfloat16 --pack 10 \
    --impl stacked --impl nn.LSTM "${study_shapes[@]}" --reps 11 --json
  # the quickstart's 3 depths × 10 seeds at half its steps (a lease is short)
  step bench-study 360 python3 -m lstmlab bench --study configs/quickstart.yaml --set train.steps=1000 \
    --sweep train.seed=0,1,2,3,4,5,6,7,8,9 --jobs 2 --data-dir "$work/data" --json
  ;;
*)
  echo "unknown phase $phase (tests, layers or study)" >&2
  exit 2
  ;;
esac
rm -rf "$work"
cat "$summary"
