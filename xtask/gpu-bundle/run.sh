#!/usr/bin/env bash
# Every GPU check of this bundle in one run; made by `cargo xtask gpu-bundle` (source:
# xtask/gpu-bundle/run.sh). Usage: ./run.sh [--quick] [FILTER]
#
#   FILTER   run only the steps whose name contains it
#   --quick  tiny sizes (test executables only listed, the demo model instead of U-ViT-S/2, a few
#            steps and images): checks the script end to end, e.g. on the CUDA simulator
#            (SPARSEDM_CUDA_SIM=1 ./run.sh --quick) before a GPU is lent.
#
# Steps, in order: the GPU test executables; the U-ViT-S/2 bench (training step at batch 128 bf16,
# dense and SR-STE; sampling forward at batch 500 bf16, dense and 2:4 when the CLI has
# `bench --pattern`); the GEMM table beside the cuSPARSELt ceiling; `repro table3`; a 200-step bf16
# training run of the demo model whose losses are compared with the CPU's (f32, same seed and
# config, computed on this machine's CPU cores in the background while the GPU steps run); FID statistics
# of 5,000 generated images on the GPU, and the same statistics of 250 of them on the GPU and on
# the CPU (InceptionV3 with the stand-in formula weights: the real ones are not downloadable
# there). Each step has its own timeout and the whole run a budget (BUDGET_S, default 450 s), so
# one failure cannot eat the machine's time; a summary table ends the output.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
QUICK=0
FILTER=""
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -*) echo "unknown flag $a; usage: ./run.sh [--quick] [FILTER]" >&2; exit 2 ;;
    *) FILTER="$a" ;;
  esac
done
LOG_DIR="${LOG_DIR:-${OUT:-$HERE/logs}}"
mkdir -p "$LOG_DIR/tmp"
BUDGET_S="${BUDGET_S:-450}"
START=$(date +%s)
BIN="$HERE/bin/sparsedm"
REF="$HERE/reference"

# Library path: the python nvidia wheels (cu13 first; cuSPARSELt is only there), then the toolkit.
LIBS=""
NV="$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__) if getattr(nvidia, "__file__", None) else list(nvidia.__path__)[0])' 2>/dev/null || true)"
if [ -n "$NV" ]; then
  for d in "$NV"/cu13/lib "$NV"/*/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
fi
for d in /usr/local/cuda/lib64 /usr/local/nvidia/lib /usr/local/nvidia/lib64; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SPARSEDM_REQUIRE_GPU=1
# What the test executables need on a machine without the build tree (see tests/gpu_cli.rs).
export SPARSEDM_BIN="$BIN" SPARSEDM_TEST_TMP="$LOG_DIR/tmp"
[ -d "$HERE/../crates" ] && export SPARSEDM_REPO="$(cd "$HERE/.." && pwd)"

case "${SPARSEDM_CUDA_SIM:-}" in
  1|true|TRUE|True) echo "gpu: CUDA SIMULATOR (SPARSEDM_CUDA_SIM) -- NOT A GPU: nothing below is a GPU measurement"
                    [ $QUICK = 1 ] || echo "warning: a full run on the simulator takes hours; use --quick" ;;
  *) nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /' ;;
esac
[ $QUICK = 1 ] && echo "mode: --quick (tiny sizes: checks the script, measures nothing)"

SUMMARY="$LOG_DIR/summary.txt"
: > "$SUMMARY"

# The CPU's losses for step 5 (the demo model, f32, same config and seed), started now on the CPU
# cores so that they are ready when the GPU run is; --quick makes its own tiny one in step 5.
TRAIN=(--config demo_shapes_uvit --set train.log_interval=1 --set train.sample_interval=0 --set train.save_interval=100000 --force)
CPU_REF_PID=""
if [ $QUICK = 0 ]; then
  case train-demo-bf16 in *"$FILTER"*)
    ( timeout --kill-after=10 400 nice "$BIN" train "${TRAIN[@]}" --set train.n_steps=200 --device cpu --out "$LOG_DIR/train-cpu" \
        > "$LOG_DIR/train-cpu-reference.log" 2>&1; echo $? > "$LOG_DIR/train-cpu-reference.rc" ) &
    CPU_REF_PID=$! ;;
  esac
fi
status=0
DETAIL=""

# run_one NAME TIMEOUT_S COMMAND...: runs COMMAND with stdout+stderr in $LOG_DIR/NAME.log under
# min(TIMEOUT_S, what is left of the budget); one summary row (verdict, seconds, DETAIL or counts).
run_one() {
  local name="$1" limit="$2"; shift 2
  case "$name" in *"$FILTER"*) ;; *) return 1 ;; esac
  local left=$((BUDGET_S - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    row SKIP "$name" 0 "the run's budget (${BUDGET_S} s) is spent"; status=1; return 1
  fi
  local log="$LOG_DIR/$name.log" start rc
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1; rc=$?
  LAST_SECS=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$start}")
  LAST_RC=$rc
  local verdict=PASS
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict=TIMEOUT; elif [ $rc -ne 0 ]; then verdict=FAIL; fi
  local counts; counts=$(grep -E '^test result:' "$log" | awk '{p+=$4; f+=$6; i+=$8} END{if (NR) printf "%d passed, %d failed, %d ignored", p, f, i}')
  LAST_VERDICT=$verdict
  if [ $verdict != PASS ]; then
    status=1
    row "$verdict" "$name" "$LAST_SECS" "${counts:-exit $rc after ${limit} s limit}; log $log"
    tail -n 20 "$log" | sed 's/^/    | /'
    return 1
  fi
  [ -n "$counts" ] && row PASS "$name" "$LAST_SECS" "$counts"
  return 0
}
row() { printf '%-7s %-30s %7ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$SUMMARY"; }
# A JSON field of a bench report (stdout of `bench --json`).
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); v=r.get(sys.argv[2]); print('n/a' if v is None else (f'{v:.1f}' if isinstance(v,float) else v))" "$1" "$2" 2>/dev/null || echo n/a; }

# 1. The GPU test executables (listed only with --quick: CI runs them on the simulator).
for t in "$HERE"/tests/*; do
  [ -x "$t" ] || continue
  if [ $QUICK = 1 ]; then
    run_one "test-$(basename "$t")" 60 "$t" --list && row PASS "test-$(basename "$t")" "$LAST_SECS" "$(grep -c ': test$' "$LOG_DIR/test-$(basename "$t").log") tests listed (--quick)"
  else
    run_one "test-$(basename "$t")" 120 "$t" --test-threads=1
  fi
done

# 2. U-ViT-S/2 bench: training steps at batch 128, sampling forward at batch 500, bf16.
# A tiny U-ViT with --quick (the simulator runs attention's softmax thread by thread).
TINY=(--set nnet.img_size=16 --set nnet.patch_size=4 --set nnet.embed_dim=16 --set nnet.depth=1 --set nnet.num_heads=2)
if [ $QUICK = 1 ]; then BENCH=(--config demo_shapes_uvit "${TINY[@]}" --iters 1); B128=2; B500=2; else BENCH=(--config cifar10_uvit_small --iters 10); B128=128; B500=500; fi
export LOG_DIR
# PyTorch's H200 times beside ours (../shared/GPU.md §6); not beside --quick's tiny model.
if [ $QUICK = 1 ]; then P_TRAIN=""; P_SRSTE=""; P_FWD=""; P_FID=""; else P_TRAIN=" (PyTorch 46.9)"; P_SRSTE=" (PyTorch 71.9)"; P_FWD=" (PyTorch 51.0)"; P_FID=" (pytorch-fid H200: 5209 images/s)"; fi
if run_one bench-train-b$B128 120 bash -c '"$0" bench "$@" > "$LOG_DIR/bench-train.json"' "$BIN" "${BENCH[@]}" --device cuda --precision bf16 --batch $B128 --json; then
  j="$LOG_DIR/bench-train.json"
  row PASS bench-train-b$B128 "$LAST_SECS" "$(field "$j" device); train step dense $(field "$j" train_step_ms) ms$P_TRAIN, SR-STE $(field "$j" train_step_srste_ms) ms$P_SRSTE; peak $(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['peak_device_memory_bytes']/2**30,1))" "$j" 2>/dev/null || echo n/a) GiB"
fi
PATTERN=()
if "$BIN" bench --help 2>/dev/null | grep -q -- '--pattern'; then PATTERN=(--pattern 2:4); NM_NOTE=""; else NM_NOTE="; 2:4 forward n/a (this CLI has no bench --pattern)"; fi
if run_one bench-forward-b$B500 120 bash -c '"$0" bench "$@" > "$LOG_DIR/bench-forward.json"' "$BIN" "${BENCH[@]}" --device cuda --precision bf16 --batch $B500 "${PATTERN[@]}" --json; then
  j="$LOG_DIR/bench-forward.json"
  row PASS bench-forward-b$B500 "$LAST_SECS" "forward dense $(field "$j" forward_ms) ms$P_FWD, 2:4 $(field "$j" forward_nm_ms) ms$NM_NOTE"
fi

# 2b. The tiny DDPM UNet's sampling forward with every layer 2:4: its Conv2d layers through im2col +
#     cuSPARSELt (kind cusparselt-2:4-conv; the 3-channel output conv stays dense). Not with --quick:
#     the bench also times training steps, minutes on the simulator; the simulated check of this path
#     is the gpu_deployed24 test (step 1, and CI).
if [ $QUICK = 1 ]; then
  case bench-unet-24 in *"$FILTER"*) row SKIP bench-unet-24 0 "--quick: tests/gpu_deployed24 checks the UNet's 2:4 convolutions" ;; esac
elif [ ${#PATTERN[@]} -gt 0 ] && run_one bench-unet-24-b256 120 bash -c '"$0" bench "$@" > "$LOG_DIR/bench-unet.json"' "$BIN" --config demo_shapes_unet --iters 10 --device cuda --precision bf16 --batch 256 "${PATTERN[@]}" --json; then
  j="$LOG_DIR/bench-unet.json"
  row PASS bench-unet-24-b256 "$LAST_SECS" "UNet forward dense $(field "$j" forward_ms) ms, 2:4 $(field "$j" forward_nm_ms) ms ($(field "$j" nm_layers) 2:4 layers)"
fi

# 3. The GEMM table beside the cuSPARSELt ceiling (on the simulator: the scaled-down agreement check).
if [ -x "$HERE/benches/gpu_gemm" ]; then
  if [ $QUICK = 1 ]; then GEMM=(env SPARSEDM_BENCH_QUICK=1 "$HERE/benches/gpu_gemm"); else GEMM=("$HERE/benches/gpu_gemm" --bench); fi
  run_one gemm-table 150 "${GEMM[@]}" && row PASS gemm-table "$LAST_SECS" "$(grep -c '| met |' "$LOG_DIR/gemm-table.log") shapes at >= 95 % of the ceiling's speedup, $(grep -c 'NOT met' "$LOG_DIR/gemm-table.log") not; $(tail -n 1 "$LOG_DIR/gemm-table.log")"
fi

# 4. Table 3 (a GPU timing: the simulator refuses it).
if [ $QUICK = 1 ] && [ -n "${SPARSEDM_CUDA_SIM:-}" ]; then
  case table3 in *"$FILTER"*) row SKIP repro-table3 0 "the simulator is never timed" ;; esac
else
  run_one repro-table3 150 "$BIN" repro table3 --device cuda --out "$LOG_DIR/table3" && row PASS repro-table3 "$LAST_SECS" "$(grep -m1 -oE 'Targets (all met|not all met)' "$LOG_DIR/repro-table3.log" "$LOG_DIR"/table3/*.md 2>/dev/null | head -n 1 | sed 's/^[^:]*://') (table in $LOG_DIR/table3)"
fi

# 5. The demo model trained 200 steps at bf16 on the GPU, its losses beside the CPU's (f32, from the
#    background run started above). --quick: a tiny U-ViT at batch 4 for 3 steps, its CPU run first.
LOSSES="$LOG_DIR/train-cpu/metrics.jsonl"
if [ $QUICK = 1 ]; then
  STEPS=3
  TRAIN+=("${TINY[@]}" --set train.batch_size=4)
  run_one train-cpu-reference 60 "$BIN" train "${TRAIN[@]}" --set train.n_steps=$STEPS --device cpu --out "$LOG_DIR/train-cpu" \
    && row PASS train-cpu-reference "$LAST_SECS" "the --quick run's CPU losses"
else
  STEPS=200
fi
if run_one train-demo-bf16 120 "$BIN" train "${TRAIN[@]}" --set train.n_steps=$STEPS --set train.precision=bf16 --device cuda --out "$LOG_DIR/train-demo"; then
  secs=$LAST_SECS
  if [ -n "$CPU_REF_PID" ]; then
    wait "$CPU_REF_PID"
    row "$([ "$(cat "$LOG_DIR/train-cpu-reference.rc" 2>/dev/null)" = 0 ] && echo PASS || echo FAIL)" train-cpu-reference - \
      "the CPU's f32 run of the same config and seed, in the background; log $LOG_DIR/train-cpu-reference.log"
  fi
  cmp=$(python3 "$REF/compare_losses.py" "$LOG_DIR/train-demo/metrics.jsonl" "$LOSSES" $STEPS 2>&1)
  case "$cmp" in PASS*) row PASS train-demo-bf16 "$secs" "$STEPS steps in $secs s; $cmp" ;; *) row FAIL train-demo-bf16 "$secs" "$cmp"; status=1 ;; esac
fi

# 6. FID statistics: 5,000 generated images on the GPU (throughput), then 250 of them on the GPU and
#    on the CPU (the same images: the statistics must agree).
if [ $QUICK = 1 ]; then NBIG=4; NSMALL=2; FB=2; SAMPLE_STEPS=(--steps 2); else NBIG=5000; NSMALL=250; FB=500; SAMPLE_STEPS=(); fi
W="$LOG_DIR/tmp/inception-formula.safetensors"
DEMO="$REF/demo_shapes_uvit_dense.safetensors"
if run_one fid-setup 120 bash -c '"$0" "$1" && "$2" sample --checkpoint "$3" --n "$4" --batch "$5" --precision bf16 --device cuda --out "$6" --force "${@:9}" && "$2" sample --checkpoint "$3" --n "$7" --batch "$7" --device cuda --out "$8" --force "${@:9}"' \
    "$HERE/bin/formula_inception" "$W" "$BIN" "$DEMO" $NBIG $FB "$LOG_DIR/tmp/gen-big.npz" $NSMALL "$LOG_DIR/tmp/gen-small.npz" "${SAMPLE_STEPS[@]}"; then
  row PASS fid-setup "$LAST_SECS" "formula Inception weights; $NBIG and $NSMALL images sampled on the GPU"
  if run_one fid-stats-gpu-$NBIG 120 "$BIN" fid stats --inception "$W" --images "$LOG_DIR/tmp/gen-big.npz" --out "$LOG_DIR/tmp/stats-big.npz" --batch $FB --device cuda --force; then
    row PASS fid-stats-gpu-$NBIG "$LAST_SECS" "$(grep -o '[0-9]* images in [0-9.]* s ([0-9.]* images/s)' "$LOG_DIR/fid-stats-gpu-$NBIG.log" | tail -n 1)$P_FID"
  fi
  if run_one fid-stats-cpu-vs-gpu 150 bash -c '"$0" fid stats --inception "$1" --images "$2" --out "$3" --batch 50 --device cuda --force && "$0" fid stats --inception "$1" --images "$2" --out "$4" --batch 50 --device cpu --force' \
      "$BIN" "$W" "$LOG_DIR/tmp/gen-small.npz" "$LOG_DIR/tmp/stats-small-gpu.npz" "$LOG_DIR/tmp/stats-small-cpu.npz"; then
    secs=$LAST_SECS
    cmp=$(python3 "$REF/compare_stats.py" "$LOG_DIR/tmp/stats-small-gpu.npz" "$LOG_DIR/tmp/stats-small-cpu.npz" 2>&1)
    case "$cmp" in PASS*) row PASS fid-stats-cpu-vs-gpu "$secs" "$NSMALL images; $cmp" ;; *) row FAIL fid-stats-cpu-vs-gpu "$secs" "$cmp"; status=1 ;; esac
  fi
fi

# 7. prune on the GPU: Diff-Pruning of the demo model (the Taylor-importance pass's forwards and
#    backwards on the device) to half its MACs; magnitude pruning on the device is the gpu_prune test.
if [ $QUICK = 1 ]; then PRUNE=(--steps 2 --batch 2); else PRUNE=(--steps 250 --batch 64); fi
run_one prune-diff-pruning 120 "$BIN" prune --method diff-pruning --macs 0.5 --config demo_shapes_uvit --weights "$DEMO" \
    "${PRUNE[@]}" --device cuda --out "$LOG_DIR/tmp/pruned.safetensors" --force \
  && row PASS prune-diff-pruning "$LAST_SECS" "$(grep -m1 '^importance:' "$LOG_DIR/prune-diff-pruning.log")"

echo
echo "== summary ($(($(date +%s) - START)) s of a ${BUDGET_S} s budget; logs in $LOG_DIR)"
cat "$SUMMARY"
for f in "$LOG_DIR"/gemm-table.log "$LOG_DIR"/repro-table3.log; do
  [ -f "$f" ] && { echo "== $(basename "$f")"; tail -n 30 "$f"; }
done
[ -n "$CPU_REF_PID" ] && kill "$CPU_REF_PID" 2>/dev/null
exit $status
