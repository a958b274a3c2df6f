#!/usr/bin/env bash
# The one check a session lent a GPU machine runs (about 8 minutes on one H100): the CUDA tests,
# benchmarks/bench_device.py A-E, and the quick audit on CUDA vs CPU (scripts/compare_runs.py), with a
# summary of figures and failures in OUTDIR/summary.md (default: $OUT, else reports/gpu-check).
#
#   scripts/gpu_check.sh --fetch-wheels     # here, with PyPI: the packages the GPU image lacks, into .whl/
#   scripts/gpu_check.sh [OUTDIR]           # there: carry .whl (the machine reaches no registry)
#   scripts/gpu_check.sh --dry-run [OUTDIR] # every step on CPU at tiny sizes (minutes)
#
# The GPU image has python3 with torch, torchvision, numpy, scipy, matplotlib, pytest, … but not
# foolbox, robustbench, pyautoattack, torch-pruning and their small dependencies: they are installed
# from .whl/ into a temporary folder on PYTHONPATH, with this checkout (no pip install -e). Ray's wheel
# is larger than what travels to that machine, so the Ray tests skip there. Each step runs under its own
# time limit; a failed or timed-out step is recorded and the next one runs. Exit 0 when every step passed.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DRY=0
OUTDIR=""
WHEELS=(robustbench==1.1.1 foolbox==3.3.4 eagerpy==0.30.0 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3
        pyautoattack==0.2.0 torch-pruning==1.6.1 gdown==5.1.0 geotorch==0.4.0 beautifulsoup4==4.15.0
        soupsieve==4.1.4 setuptools==80.9.0)
GPU_TESTS=(tests/test_device.py tests/test_member_device.py tests/test_corruptions_device.py
           tests/test_latency_device.py tests/test_accelerators.py tests/test_imagenet_size.py tests/test_ray.py)

for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --fetch-wheels)
      exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$ROOT/.whl" "${WHEELS[@]}" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) OUTDIR=$arg ;;
  esac
done
OUTDIR=${OUTDIR:-${OUT:-$ROOT/reports/gpu-check}}
mkdir -p "$OUTDIR"
WORK=$(mktemp -d)
SUMMARY="$OUTDIR/summary.md"
FAILED=0

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  TEST_ARGS=(-k "synchronize or prefetch or digest")
  cat >"$WORK/tiny.yaml" <<'EOF'
data: {source: bundled, train: null, batch_size: 10}
pruning: {methods: [magnitude], ratios: [0.5], finetune: {epochs: 0}, measure_latency: false}
evaluate:
  calibration: {}
  corruption: {corruptions: [gaussian_noise], severities: [1], subset: 20}
  noise: {eps: [0.1], subset: 20}
  ood: {sets: [blobs], subset: 20}
  adversarial: {sample_size: 8, linf_eps: [0.0039216], l2_eps: [], attacks: [fgsm], autoattack_eps: [],
                min_norm: [], transfer: [], large_eps: null}
EOF
  BENCH=(--device cpu --quick --n 20 --repeats 1 --batch-size 10 --corrupt-batch 2 --aa-n 2 --aa-iters 1
         --e2e --e2e-n 20 --e2e-config "$WORK/tiny.yaml")
  LIMITS=(60 300 600 60)
else
  DEVICE=cuda
  TEST_ARGS=()
  BENCH=(--device cuda --quick --n 2000 --repeats 3 --batch-size 250 --corrupt-batch 64 --aa-n 200 --aa-iters 20
         --e2e --e2e-n 500)
  LIMITS=(60 180 210 30)
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# step NAME LIMIT_S COMMAND...: its output in OUTDIR/NAME.log, a row of the summary table
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || FAILED=1
  local what=$([ "$rc" = 0 ] && echo ok || ([ "$rc" = 124 ] && echo "timed out" || echo "failed (exit $rc)"))
  echo "| $name | $what | $(($(date +%s) - start)) s / $limit s |" >>"$SUMMARY"
}

setup() {
  if [ "$DRY" = 0 ] && compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$ROOT"/.whl/*.whl \
      || return 1
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PY" -c "import sys, torch; import robusteval.api, foolbox, torch_pruning, pyautoattack
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)
print('TF32 after importing robusteval: cudnn', torch.backends.cudnn.allow_tf32, 'matmul',
      torch.backends.cuda.matmul.allow_tf32)"
}

{
  echo "# GPU check ($([ "$DRY" = 1 ] && echo "dry run on CPU" || echo "device $DEVICE"), $(date -u +%FT%TZ))"
  echo
  echo "| step | result | seconds |"
  echo "|---|---|---|"
} >"$SUMMARY"

[ "$DRY" = 0 ] && export PYTHONPATH="$WORK/site:$PYTHONPATH"
export -f setup
export DRY PY ROOT WORK
step setup "${LIMITS[0]}" bash -c setup
if [ "$DRY" = 1 ]; then
  step tests "${LIMITS[1]}" "$PY" -m pytest -q -p no:cacheprovider "${TEST_ARGS[@]}" "${GPU_TESTS[@]}"
else
  step tests "${LIMITS[1]}" "$PY" -m pytest -q -p no:cacheprovider -rfEs "${GPU_TESTS[@]}"
fi
step bench "${LIMITS[2]}" "$PY" "$ROOT/benchmarks/bench_device.py" "${BENCH[@]}" --e2e-out "$WORK/e2e"
step compare "${LIMITS[3]}" "$PY" "$ROOT/scripts/compare_runs.py" "$WORK/e2e/cpu" "$WORK/e2e/$DEVICE" \
  --json "$OUTDIR/compare.json"

{
  echo
  echo "## Set-up"; echo; sed 's/^/    /' "$OUTDIR/setup.log" | tail -n 8
  echo
  echo "## Tests (failures, errors, skips; last line)"; echo
  grep -E '^(FAILED|ERROR|SKIPPED)' "$OUTDIR/tests.log" | cut -c1-200 | sed 's/^/    /' | head -n 40
  tail -n 1 "$OUTDIR/tests.log" | sed 's/^/    /'
  echo
  echo "## bench_device.py A-E"; echo; grep -E '^(device|[A-E] |   [a-z])' "$OUTDIR/bench.log" | sed 's/^/    /'
  grep -E 'Error|error:' "$OUTDIR/bench.log" | tail -n 3 | sed 's/^/    /'
  echo
  echo "## The quick audit (E), $DEVICE vs cpu, per family"; echo; sed 's/^/    /' "$OUTDIR/compare.log"
} >>"$SUMMARY"
rm -rf "$WORK"
cat "$SUMMARY"
exit "$FAILED"
