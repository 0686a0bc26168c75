#!/usr/bin/env bash
# Unpack the packages LangBRT imports that the GPU device image lacks into .gpu/pylib (git-ignored), as
# wheels for the image's Python, for a device call to carry:
#   run(command="bash benchmarks/gpu_session.sh ...", carry=[".gpu/pylib"]).
# Why: the image has torch, triton, numpy, safetensors, PIL, onnx but not cachetools (the prompt cache),
# pypng or pyspng (16-bit PNG), and fetches nothing; without them every step failed on importing langbrt
# (third H100 session: cachetools; fourth: png, 2 minutes of device time each). pyspng is compiled, so a
# copy of this machine's (Python 3.11) would not load there: the wheels are downloaded for 3.12.
# The MiniLM text encoder (transformers + an 88 MB weights wheel) cannot travel (64 MiB per call): the GPU
# tests use a hashed stand-in encoder (tests/stand_in_text.py) and the benchmarks random prompt embeddings.
# PYTHON: the interpreter whose installed versions are staged (default .venv/bin/python of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
device_python=3.12  # the device image's Python: pyspng is compiled, so its wheel must be for that one
packages=(cachetools pypng pyspng)
# Both folders anew: wheels left by an interrupted run would be unpacked beside the new ones.
rm -rf .gpu/pylib .gpu/wheels && mkdir -p .gpu/pylib .gpu/wheels
# The versions this checkout runs with here, as wheels for the device's Python, unpacked (a wheel is a zip).
pins=$("$python" -m pip list --format=freeze 2>/dev/null | grep -iE "^($(IFS='|'; echo "${packages[*]}"))==" || true)
if [ "$(wc -w <<< "$pins")" -ne "${#packages[@]}" ]; then  # a partial pylib fails on the device, minutes later
    echo "stage_device_deps: $python has ${pins:-none of them} installed, not all of ${packages[*]}:" \
        "install them there, or name another interpreter with PYTHON=" >&2
    exit 1
fi
# shellcheck disable=SC2086  # $pins: one requirement per word
"$python" -m pip download -q --only-binary=:all: --no-deps --python-version "$device_python" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/wheels $pins
for wheel in .gpu/wheels/*.whl; do
    "$python" -m zipfile -e "$wheel" .gpu/pylib/
done
rm -rf .gpu/wheels
find .gpu/pylib -name __pycache__ -prune -exec rm -rf {} +
echo "staged in .gpu/pylib: $(ls .gpu/pylib | grep -v dist-info | tr '\n' ' ')"
