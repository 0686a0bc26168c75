#!/usr/bin/env bash
# Everything LangBRT still needs a GPU for, in ONE device-tool call (about 9 minutes at most on an H100/H200):
#
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=590)
#
# 1. benchmarks/kernel_sweep.py: the fused kernel at the paper shape for every MMA path (LANGBRT_TCA_MMA),
#    dtype and warp count, each in its own process (a faulting variant cannot hide the others), checked
#    against the reference and timed (wgmma was miscompiled by triton 3.6: re-check on newer Tritons);
# 2. GPU tests: the compiled kernel against the reference (forward + backward at the paper shape in
#    fp32/fp16/bf16, fast sigmoid, torch.compile(fullgraph)), the torch backend's batch-1 CUDA graphs against
#    eager, and the TensorRT engines (skipped: the image has no TensorRT);
# 3. benchmarks/bench_attention.py: kernel vs eager reference vs torch.compile, batch 1/8/32, fp16/bf16,
#    called from Python and replayed from CUDA graphs;
# 4. langbrt-bench on the torch backend at the paper preset, fp32 and fp16, batch 1/8/32 (random weights and
#    random prompt embeddings: latency does not depend on their values), and benchmarks/profile_forward.py's
#    CUDA kernel table and latency for one fp16 batch-8 forward;
# 5. the same forward through torch.compile.
# Each step has its own time limit and writes its JSON as it goes, so a slow step costs only itself.
# The device image (Python 3.12, torch, triton) has neither TensorRT nor onnxruntime-gpu and fetches nothing.
# Nothing is installed: the repository's kernels/, training/, export/ and runtime/ are linked into langbrt/
# (the package-dir mapping pyproject.toml gives setuptools) and the repository root goes on PYTHONPATH.
# Results land in $OUT (which the device tool brings back; at most 8 files) or benchmarks/results/: commit
# the JSON files and put the tables in README ("The fused attention kernel", "Benchmarking").
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
log="$out/gpu-session.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for pkg in kernels training export runtime; do
    [ -e "langbrt/$pkg" ] || ln -s "../$pkg" "langbrt/$pkg"
done
{
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
    python3 -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, triton.__version__)"
} 2>&1 | tee "$out/gpu.txt"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')
day=$(date +%F)
step() { echo "== $1 ($(date +%T))" | tee -a "$log"; }

step "1. kernel variants (MMA path x dtype x warps), one process each"
timeout 130 python3 benchmarks/kernel_sweep.py --batch 8 --jobs 15 --out "$out/kernel-sweep-$card-$day.json" \
    2>&1 | tee -a "$log"

step "2. GPU tests"
timeout 80 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_tca_triton.py tests/test_runtime.py \
    tests/test_tensorrt_engine.py 2>&1 | tail -40 | tee -a "$log"

step "3. attention kernel benchmark"
timeout 100 python3 benchmarks/bench_attention.py --batch-sizes 1 8 32 --dtypes fp16 bf16 --check \
    --iters 100 --out "$out/attention-$card-$day.json" 2>&1 | tail -60 | tee -a "$log"

step "4. end-to-end latency, torch backend, paper preset; where one forward spends its GPU time"
python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from profile_forward import random_model, PRESETS
random_model(PRESETS['paper']()).save_pretrained('/tmp/langbrt-paper-random')" 2>&1 | tee -a "$log"
timeout 80 python3 -m langbrt.runtime.cli_bench --model /tmp/langbrt-paper-random --backend torch --device cuda \
    --precision fp32 fp16 --batch-sizes 1 8 32 --seconds 3 --out "$out/bench-torch-paper-$card-$day.json" \
    2>&1 | tail -30 | tee -a "$log"
timeout 40 python3 benchmarks/profile_forward.py --preset paper --precision fp16 --batch 8 \
    --out "$out/profile-paper-fp16-b8-$card-$day.txt" 2>&1 | tail -30 | tee -a "$log"
step "5. the same forward through torch.compile (does inductor's fusion of GroupNorm/elementwise pay?)"
timeout 120 python3 benchmarks/profile_forward.py --compile --preset paper --precision fp16 --batch 8 \
    --out "$out/profile-paper-fp16-b8-compile-$card-$day.txt" 2>&1 | tail -30 | tee -a "$log"
step "done: $(ls "$out" | tr '\n' ' ')"
