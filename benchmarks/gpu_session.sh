#!/usr/bin/env bash
# Everything LangBRT still needs a GPU for, by step name (run in the order listed below, whatever order they are
# named in); a device call may run 10 minutes:
#
#   bash benchmarks/stage_device_deps.sh   # here, first: .gpu/pylib, the packages the device image lacks
#   run(command="bash benchmarks/gpu_session.sh sweep tests attention ncu", carry=[".gpu/pylib"], timeout_s=590)
#   run(command="bash benchmarks/gpu_session.sh e2e", carry=[".gpu/pylib"], timeout_s=590)  # its 7 files + the log
#   run(command="bash benchmarks/gpu_session.sh probe compile", carry=[".gpu/pylib"], timeout_s=590)  # the rest
#   run(command="bash benchmarks/gpu_session.sh", ...)     # every step: more than one call's 10 minutes
#   run(command="LANGBRT_TCA_MMA=mma bash benchmarks/gpu_session.sh attention", ...)  # the other MMA path
#   run(command="SWEEP_ARGS=\"--kernels folded --dtypes fp16\" bash benchmarks/gpu_session.sh sweep", ...)  # a part
#   (ATTENTION_ARGS likewise: more words for bench_attention.py, e.g. "--kernels folded")
#
# sweep:     benchmarks/kernel_sweep.py: both fused kernels at the paper shape for each autotuned launch
#            config (tca_launch_configs.LAUNCH_CONFIGS), MMA path (LANGBRT_TCA_MMA) and dtype, each in its own process
#            (a faulting variant cannot hide the others), checked against the reference and timed at batch 8
#            and 32 (the direct kernel on mma.sync only: its wgmma build is wrong with triton 3.6); not on cold
#            inputs (SWEEP_ARGS="--cold-l2" adds that: it about doubles the timing pass, and the folded fp16/bf16
#            sweep took ~3.5 minutes of the step's 330 s);
# tests:     GPU tests: every autotuned config of both kernels and the autotuned kernel against the
#            reference (forward + backward at the paper shape in fp32/fp16/bf16, fast sigmoid,
#            torch.compile(fullgraph)), the torch backend's batch-1 CUDA graphs against eager, and the
#            TensorRT engines (skipped: no TensorRT), a short training run on CUDA (EMA, VGG, resume); and, at
#            the same time, the kernel's tests with the direct kernel (LANGBRT_TCA_KERNEL=direct; folded is
#            the default) and the folded kernel on mma.sync (wgmma is its default);
# attention: benchmarks/bench_attention.py: both fused kernels vs eager reference vs torch.compile, batch
#            1/8/32, fp16/bf16, called from Python and replayed from CUDA graphs, warm (the same inputs every
#            call) and cold (--cold-l2: calls cycling through input copies 4x the L2, rows <impl>+graph-cold;
#            ~10-15 s more than the ~70 s the step took without), in the default sigmoid form (tanh in half
#            precision, tca_choices.SigmoidChoice) and the exact one (rows <kernel>-exact);
# probe:     benchmarks/probe_tanh_approx.py: tanh.approx.f32 at the folded kernel's Swin-mask logits (exactly -1?)
#            and its error against the exact sigmoid on [-12, 12];
# ncu:       Nsight Compute (if the image has it) on one batch-32 launch of each kernel (the folded one on
#            wgmma and mma.sync): occupancy, warp stall reasons, pipe and shared-memory utilisation, i.e. what limits it;
# e2e:       langbrt-bench on the torch backend at the paper preset, fp32 and fp16, batch 1/8/32 (random
#            weights and prompt embeddings: latency does not depend on their values), and
#            benchmarks/profile_forward.py's CUDA kernel table and latency for one fp16 batch-8 forward,
#            and both again with LANGBRT_GROUP_NORM=native (PyTorch's GroupNorm + GELU: the fused default's
#            baseline), and both in channels_last (no cuDNN transposes; the fused GroupNorm's NHWC kernels;
#            with PyTorch's GroupNorm the forward ran 17.4 against NCHW's 17.2 ms): the forward, and
#            langbrt-bench fp16 with LANGBRT_MEMORY_FORMAT=channels_last (the backend's opt-in switch, batch-1
#            CUDA graphs included: its default flips if it wins); and profile_forward.py --backend-run at fp16
#            batch 32 and 8 (one file): what langbrt-bench times, TorchBackend.run on CPU images and the copy
#            back, split into its stages (the bench's 141 ms at batch 32 against the forward's 44.7 on the
#            H100: which host copies take the rest?). The batch-32 forward profile is gone (the fifth H100
#            session answered it). e2e writes 7 files and the log, the 8 a call brings back: name compile in
#            another call;
# compile:   the same forward through torch.compile.
# Each step has its own time limit and writes as it goes, so a slow step costs only itself; SESSION_S (default
# 570 s) caps them all: a step is skipped when less than a minute of it is left.
# The device image (Python 3.12, torch, triton) has neither TensorRT nor onnxruntime-gpu and fetches nothing.
# Nothing is installed: the repository's kernels/, training/, export/ and runtime/ are linked into langbrt/
# (the package-dir mapping pyproject.toml gives setuptools) and the repository root goes on PYTHONPATH.
# Results land in $OUT (which the device tool brings back; at most 8 files) or benchmarks/results/: commit
# the JSON files and put the tables in README ("The fused attention kernel", "Benchmarking").
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1  # the repository root, wherever it is called from
known_steps="sweep tests attention probe ncu e2e compile"
for name in "$@"; do  # a typo would otherwise run nothing and exit 0, a device call spent
    [[ " $known_steps " == *" $name "* ]] || { echo "gpu_session: unknown step '$name' (steps: $known_steps)" >&2; exit 2; }
done
scratch=$(mktemp -d)  # test logs and the random paper checkpoint: never shared /tmp names
links=()  # the package links made below, removed on exit: the checkout is left as it was found
trap 'rm -rf "$scratch"; for link in "${links[@]}"; do rm -f "$link"; done' EXIT
out=${OUT:-benchmarks/results}
mkdir -p "$out"
log="$out/gpu-session.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.gpu/pylib:$PWD${PYTHONPATH:+:$PYTHONPATH}"
for pkg in kernels training export runtime; do
    [ -e "langbrt/$pkg" ] || { ln -s "../$pkg" "langbrt/$pkg" && links+=("langbrt/$pkg"); }
done
# Every step imports the package: a missing dependency is one line here, not a traceback in each step.
if ! missing=$(python3 -c "import langbrt.checkpoint, langbrt.runtime.cli_bench" 2>&1); then
    echo "gpu_session: cannot import langbrt (${missing##*$'\n'}); benchmarks/stage_device_deps.sh stages" \
        "cachetools, pypng and pyspng for a device call to carry (.gpu/pylib); anything else must be in the image" | tee "$log" >&2
    exit 1
fi
{
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
    python3 -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, triton.__version__)"
} 2>&1 | tee -a "$log"  # the card and versions head the log: one file fewer of the 8 $OUT returns
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')
day=$(date +%F)
step() { echo "== $1 ($(date +%T))" | tee -a "$log"; }

# A device call is cut off at its timeout_s, and whatever runs then with it; the steps' own limits add up to
# more (sweep attention probe ncu: 330 + 150 + 60 + 6 x 60 s). So each limit is cut to what is left of
# SESSION_S seconds (default 570, for timeout_s=590), and a step with under a minute left is skipped with a
# line in the log: the log ends cleanly, the package links go, and the next call knows what to rerun.
session_s=${SESSION_S:-570}
left() { local rest=$((session_s - SECONDS)); echo $((rest < $1 ? (rest > 1 ? rest : 1) : $1)); }
want() {
    [ "$steps" = all ] || [[ " $steps " == *" $1 "* ]] || return 1
    ((session_s - SECONDS >= 60)) && return 0
    echo "== $1: skipped, $((session_s - SECONDS)) s of SESSION_S=$session_s left" | tee -a "$log"
    return 1
}
steps=${*:-all}

if want sweep; then
    step "sweep: kernel variants (kernel x MMA path x dtype x warps), one process each, batch 8 and 32"
    # shellcheck disable=SC2086  # SWEEP_ARGS: words for kernel_sweep.py, e.g. "--kernels folded --dtypes fp16"
    timeout "$(left 330)" python3 benchmarks/kernel_sweep.py --batch 8 32 --jobs 15 ${SWEEP_ARGS:-} \
        --out "$out/kernel-sweep-$card-$day.json" \
        2>&1 | tee -a "$log"
fi
if want tests; then
    # Every MMA path and kernel at once: the runs are mostly Triton builds (CPU), and nothing here is timed.
    step "tests: GPU tests (defaults), and the kernel's GPU tests on the other MMA paths and kernel, concurrently"
    timeout "$(left 200)" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_tca_triton.py tests/test_runtime.py \
        tests/test_tensorrt_engine.py tests/test_group_norm.py tests/test_trainer.py > "$scratch/tests-default.txt" 2>&1 &
    # The per-config test picks its kernel itself (the default run covers both); the other runs skip it, and
    # the mma.sync run of the folded kernel skips the direct kernel's tests (mma.sync is its only path,
    # tca_choices.MMA_PATHS, which the default run covers): "environment|pytest -k expression".
    runs=("LANGBRT_TCA_KERNEL=direct|not every_autotuned_config"
          "LANGBRT_TCA_MMA=mma|not every_autotuned_config and not direct")
    for run in "${runs[@]}"; do
        vars=${run%%|*}
        # shellcheck disable=SC2086  # $vars: one or two VAR=value words
        env $vars timeout "$(left 170)" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_tca_triton.py \
            -k "${run#*|}" > "$scratch/tests-${vars// /+}.txt" 2>&1 &
    done
    wait
    for vars in default "${runs[@]%%|*}"; do
        echo "-- tests, $vars" | tee -a "$log"
        tail -30 "$scratch/tests-${vars// /+}.txt" | tee -a "$log"
    done
fi
if want attention; then
    step "attention: both kernels vs eager vs torch.compile"
    # shellcheck disable=SC2086  # ATTENTION_ARGS: more words for bench_attention.py, e.g. "--kernels folded"
    timeout "$(left 150)" python3 benchmarks/bench_attention.py --kernels direct folded --batch-sizes 1 8 32 \
        --dtypes fp16 bf16 --check --iters 100 --sigmoid-forms exact --cold-l2 ${ATTENTION_ARGS:-} \
        --out "$out/attention-${LANGBRT_TCA_MMA:+$LANGBRT_TCA_MMA-}$card-$day.json" 2>&1 | tail -100 | tee -a "$log"
fi
if want probe; then
    step "probe: what tanh.approx.f32 returns at the folded kernel's Swin-mask logits (-2^15, -2^64) and near 0"
    timeout "$(left 60)" python3 benchmarks/probe_tanh_approx.py 2>&1 | tee -a "$log"
fi
if want ncu; then
    step "ncu: Nsight Compute on one batch-32 fp16 launch of each kernel at 4 warps, the folded one on both MMA paths"
    ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    if [ -n "$ncu" ]; then
        # kernel_sweep.py --child KERNEL MMA DTYPE WARPS MAXNREG HEAD_STAGES PROGRAMS_PER_SM OUTPUT_AFTER_HEADS
        # (0: none / no)
        for variant in "direct mma fp16 4 0 0 0 0" "folded wgmma fp16 4 128 2 0 0" "folded wgmma fp16 4 128 3 0 0" \
            "folded mma fp16 4 128 2 0 0"; do
            # shellcheck disable=SC2086
            timeout "$(left 60)" "$ncu" --section SpeedOfLight --section Occupancy --section WarpStateStats \
                --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis -k regex:tca_.*fwd_kernel -c 1 \
                python3 benchmarks/kernel_sweep.py --child $variant --batch 32 2>&1 | grep -v '^RESULT\|^PTX' \
                >> "$out/ncu-$card-$day.txt"
        done
        # What the default launch waits on and which pipes it fills (the summary sections above name neither):
        # every stall reason per issued instruction and every pipe's utilisation, for the autotuned pick at
        # batch 32 in the default (tanh) form. Two spellings, in case this ncu lacks --print-details.
        default="folded wgmma fp16 4 128 3 0 0"
        # shellcheck disable=SC2086
        timeout "$(left 60)" "$ncu" --section WarpStateStats --section ComputeWorkloadAnalysis --section SchedulerStats \
            --section InstructionStats --print-details all -k regex:tca_.*fwd_kernel -c 1 \
            python3 benchmarks/kernel_sweep.py --child $default --batch 32 2>&1 | grep -v '^RESULT\|^PTX' \
            >> "$out/ncu-$card-$day.txt"
        # One --metrics, its entries comma-separated: ncu refuses the option given twice (fifth H100 session).
        metrics='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio'
        metrics+=',regex:sm__(inst_executed_pipe|pipe)_.*\.avg\.pct_of_peak_sustained_active'
        # shellcheck disable=SC2086
        timeout "$(left 60)" "$ncu" --metrics "$metrics" \
            -k regex:tca_.*fwd_kernel -c 1 python3 benchmarks/kernel_sweep.py --child $default --batch 32 2>&1 \
            | grep -v '^RESULT\|^PTX' >> "$out/ncu-$card-$day.txt"
        tail -5 "$out/ncu-$card-$day.txt" | tee -a "$log"
    else
        echo "no ncu on this machine" | tee -a "$log"
    fi
fi
if want e2e; then
    step "e2e: langbrt-bench, torch backend, paper preset; where one fp16 batch-8 forward spends its GPU time"
    python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from profile_forward import random_model, PRESETS
random_model(PRESETS['paper']()).save_pretrained('$scratch/paper-random')" 2>&1 | tee -a "$log"
    timeout "$(left 80)" python3 -m langbrt.runtime.cli_bench --model "$scratch/paper-random" --backend torch \
        --device cuda --precision fp32 fp16 --batch-sizes 1 8 32 --seconds 3 \
        --out "$out/bench-torch-paper-$card-$day.json" 2>&1 | tail -30 | tee -a "$log"
    timeout "$(left 40)" python3 benchmarks/profile_forward.py --preset paper --precision fp16 --batch 8 \
        --out "$out/profile-paper-fp16-b8-$card-$day.txt" 2>&1 | tail -30 | tee -a "$log"
    # End to end, as langbrt-bench times it (CPU images in, the fp32 image back), by stage: batch 32 first (the
    # slow one per image), both in one file ($OUT brings back 8 files). The log gets the header and stage table;
    # sed, unlike head, reads to the end, so the script is not cut off by SIGPIPE before it writes --out.
    for batch in 32 8; do
        timeout "$(left 60)" python3 benchmarks/profile_forward.py --backend-run --preset paper --precision fp16 \
            --batch "$batch" --rows 30 --out "$scratch/backend-run-b$batch.txt" 2>&1 | sed -n 1,14p | tee -a "$log"
    done
    cat "$scratch"/backend-run-b32.txt "$scratch"/backend-run-b8.txt \
        > "$out/profile-paper-fp16-backend-run-$card-$day.txt" 2>> "$log"
    timeout "$(left 40)" python3 benchmarks/profile_forward.py --channels-last --preset paper --precision fp16 --batch 8 \
        --out "$out/profile-paper-fp16-b8-channels-last-$card-$day.txt" 2>&1 | tail -30 | tee -a "$log"
    # The torch backend in channels_last (LANGBRT_MEMORY_FORMAT, opt-in): against the fp16 rows of the first run.
    LANGBRT_MEMORY_FORMAT=channels_last timeout "$(left 60)" python3 -m langbrt.runtime.cli_bench \
        --model "$scratch/paper-random" --backend torch --device cuda --precision fp16 --batch-sizes 1 8 32 \
        --seconds 3 --out "$out/bench-torch-paper-channels-last-$card-$day.json" 2>&1 | tail -12 | tee -a "$log"
    # PyTorch's GroupNorm + GELU against the fused default (kernels/group_norm.py) in the runs above.
    LANGBRT_GROUP_NORM=native timeout "$(left 60)" python3 -m langbrt.runtime.cli_bench --model "$scratch/paper-random" \
        --backend torch --device cuda --precision fp16 --batch-sizes 1 8 32 --seconds 3 \
        --out "$out/bench-torch-paper-native-group-norm-$card-$day.json" 2>&1 | tail -12 | tee -a "$log"
    LANGBRT_GROUP_NORM=native timeout "$(left 40)" python3 benchmarks/profile_forward.py --preset paper --precision fp16 \
        --batch 8 --out "$out/profile-paper-fp16-b8-native-group-norm-$card-$day.txt" 2>&1 | tail -30 | tee -a "$log"
fi
if want compile; then
    step "compile: the same forward through torch.compile (does inductor's fusion of GroupNorm/elementwise pay?)"
    timeout "$(left 120)" python3 benchmarks/profile_forward.py --compile --preset paper --precision fp16 --batch 8 \
        --out "$out/profile-paper-fp16-b8-compile-$card-$day.txt" 2>&1 | tail -30 | tee -a "$log"
fi
step "done: $(ls "$out" | tr '\n' ' ')"
