#!/usr/bin/env bash
# Everything LangBRT still needs a GPU for, in ONE device-tool call (plan ~8 minutes on an H100):
#
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=600)
#
# 1. the compiled Triton kernel against the reference: forward + backward at the paper shape in fp32/fp16/bf16,
#    fast sigmoid, torch.compile(fullgraph) (tests/test_tca_triton.py -m gpu);
# 2. benchmarks/bench_attention.py: kernel vs eager reference vs torch.compile, batch 1/8/32, fp16/bf16;
# 3. langbrt-bench on the torch backend at the paper preset, fp32 and fp16, batch 1/8/32 (random weights and
#    random prompt embeddings: latency does not depend on their values).
# The device image (Python 3.12, torch, triton) has neither TensorRT nor onnxruntime-gpu and fetches nothing:
# LangBRT is installed without its dependencies, and nothing here needs the text encoder or the server stack.
# Results land in $OUT (which the device tool brings back) or benchmarks/results/: commit the JSON files and
# put the tables in README ("The fused attention kernel", "Benchmarking").
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || { echo "gpu_session: install failed"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')
day=$(date +%F)

echo "== 1. compiled kernel vs reference"
timeout 240 python3 -m pytest -q -m gpu tests/test_tca_triton.py 2>&1 | tee "$out/gpu-tests-$day.log"

echo "== 2. attention kernel benchmark"
timeout 240 python3 benchmarks/bench_attention.py --batch-sizes 1 8 32 --dtypes fp16 bf16 --check \
    --out "$out/attention-$card-$day.json"

echo "== 3. end-to-end latency, torch backend, paper preset"
python3 - <<'PY'
import torch

from langbrt import LangBRT, LangBRTConfig
from langbrt.text import PromptBank

cfg = LangBRTConfig.paper()
texts = list(LangBRT(cfg).predefined_prompts)
bank = PromptBank.from_state(texts, torch.nn.functional.normalize(torch.randn(len(texts), cfg.text_dim), dim=-1),
                             encoder_name=cfg.text_encoder, dim=cfg.text_dim)
LangBRT(cfg, prompt_bank=bank).save_pretrained("/tmp/langbrt-paper-random")
PY
timeout 200 langbrt-bench --model /tmp/langbrt-paper-random --backend torch --precision fp32 fp16 \
    --batch-sizes 1 8 32 --device cuda --seconds 5 --out "$out/bench-torch-paper-$card-$day.json"
echo "== done: $(ls "$out")"
