"""The fused TCA kernel compiled ahead of time for real GPUs (sm_90), on a machine without one.

The interpreter tests (test_tca_triton.py) check the kernel's maths; these check what only the compiler
shows: that it builds for Hopper at the paper preset's shape, that ptxas keeps the chosen launch width free
of register spills, and that the build satisfies TensorRT's AOT launcher (argument order, no scratch
memory, shared memory within the default 48 KiB). The build runs in a child process because this test
session imported Triton in interpreter mode (conftest).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from langbrt.kernels import tca_aot
from langbrt.kernels.tca_aot import CompiledTCAKernel, TCAKernelSpec, check_tensorrt_contract, kernel_params

REPO = Path(__file__).resolve().parents[1]

PTX_OK = """
.visible .entry tca_fwd_kernel(
\t.param .u64 .ptr .global .align 1 p0,
""" + "".join(f"\t.param .u64 .ptr .global .align 1 p{i},\n" for i in range(1, 11)) + """\
\t.param .u32 p11,
\t.param .u32 p12,
\t.param .u64 .ptr .global .align 1 p13,
\t.param .u64 .ptr .global .align 1 p14
)
{
}
"""


def compiler_child_json(*args: str) -> dict:
    """Run `python *args` in a child with Triton's compiler (this session imported Triton in interpreter
    mode) and return the JSON object that ends its output."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout[run.stdout.index("{"):])


def _compiled(ptx: str, shared: int = 1024, scratch: int = 0) -> CompiledTCAKernel:
    spec = TCAKernelSpec("fp16", 96, 9, 3, 8, 4)
    return CompiledTCAKernel(spec, 90, "tca_fwd_kernel", ptx, b"", shared, scratch)


def test_kernel_params_reads_the_entry_signature_in_order():
    assert kernel_params(PTX_OK) == ["ptr"] * 11 + ["u32", "u32", "ptr", "ptr"]


def test_tensorrt_contract_accepts_inputs_scalars_output_and_hidden_pointers():
    check_tensorrt_contract(_compiled(PTX_OK))


@pytest.mark.parametrize(
    "ptx, shared, scratch, message",
    [
        (PTX_OK.replace(".param .u32 p11", ".param .f32 p11"), 1024, 0, "not inputs, int32 scalars, output"),
        (PTX_OK.replace("\t.param .u32 p11,\n\t.param .u32 p12,\n", ""), 1024, 0, "not inputs"),
        (PTX_OK, 64 * 1024, 0, "shared memory"),
        (PTX_OK, 1024, 256, "scratch memory"),
    ],
)
def test_tensorrt_contract_rejects_what_the_launcher_cannot_call(ptx, shared, scratch, message):
    with pytest.raises(ValueError, match=message):
        check_tensorrt_contract(_compiled(ptx, shared, scratch))


def test_the_ptx_tensorrt_gets_declares_exactly_inputs_scalars_output():
    """Triton's trailing hidden pointer (p14 here) is cut, the signature otherwise untouched."""
    ptx = tca_aot.tensorrt_ptx(_compiled(PTX_OK))
    assert kernel_params(ptx) == ["ptr"] * 11 + ["u32", "u32", "ptr"]
    assert "p14" not in ptx and ptx.replace("p13\n)", "p13,\n\t.param .u64 .ptr .global .align 1 p14\n)") == PTX_OK
    reads_it = PTX_OK.replace("{\n}", "{\n\tld.param.b64 %rd1, [p14];\n}")
    with pytest.raises(ValueError, match="reads its hidden parameter p14"):
        tca_aot.tensorrt_ptx(_compiled(reads_it))


@pytest.mark.parametrize(("cuda", "ptx"), [((12, 0), 80), ((12, 2), 82), ((12, 4), 84), ((12, 6), 85),
                                           ((12, 8), 87), ((12, 9), 88), ((13, 0), 90), ((11, 8), 78)])
def test_the_ptx_isa_each_cuda_driver_takes(cuda, ptx):
    assert tca_aot.ptx_version_of_cuda(*cuda) == ptx
    assert tca_aot.ptx_isa_version(f".version {ptx // 10}.{ptx % 10}\n.target sm_90a") == ptx


def test_spec_rejects_impossible_shapes():
    with pytest.raises(ValueError, match="heads"):
        TCAKernelSpec("fp16", 96, 9, 5, 8, 0)
    with pytest.raises(ValueError, match="shift"):
        TCAKernelSpec("fp16", 96, 9, 3, 8, 8)
    with pytest.raises(ValueError, match="dtype"):
        TCAKernelSpec("int8", 96, 9, 3, 8, 0)


def test_the_direct_kernel_is_never_built_on_wgmma():
    """Its wgmma build computes wrong values (triton 3.6, three H100 sweeps): an engine must not carry it."""
    direct, folded = tca_aot.tca_choices.KernelChoice.DIRECT, tca_aot.tca_choices.KernelChoice.FOLDED
    wgmma = tca_aot.tca_choices.MmaChoice.WGMMA
    with pytest.raises(ValueError, match="the direct kernel builds only mma"):
        TCAKernelSpec("fp16", 96, 9, 3, 8, 0, kernel=direct, mma=wgmma)
    assert TCAKernelSpec("fp16", 96, 9, 3, 8, 0, kernel=folded, mma=wgmma).mma_path is wgmma


def test_only_the_folded_kernel_takes_head_stages_programs_per_sm_and_output_after_heads():
    direct, folded = tca_aot.tca_choices.KernelChoice.DIRECT, tca_aot.tca_choices.KernelChoice.FOLDED
    for wrong in ({"head_stages": 2}, {"programs_per_sm": 3}, {"output_after_heads": True}):
        with pytest.raises(ValueError, match="head_stages, programs_per_sm and output_after_heads are the folded"):
            TCAKernelSpec("fp16", 96, 9, 3, 8, 0, kernel=direct, **wrong)
    pipelined = TCAKernelSpec("fp16", 96, 9, 3, 8, 0, head_stages=2, kernel=folded)
    assert pipelined.launch_config().kernel_arguments() == {"HEAD_STAGES": 2, "PROGRAMS_PER_SM": 0,
                                                            "OUTPUT_AFTER_HEADS": False}
    persistent = TCAKernelSpec("fp16", 96, 9, 3, 8, 0, programs_per_sm=3, kernel=folded)
    assert persistent.launch_config().kernel_arguments() == {"HEAD_STAGES": 1, "PROGRAMS_PER_SM": 3,
                                                             "OUTPUT_AFTER_HEADS": False}
    after = TCAKernelSpec("fp16", 96, 9, 3, 8, 0, output_after_heads=True, kernel=folded)
    assert after.launch_config().kernel_arguments()["OUTPUT_AFTER_HEADS"] is True
    assert TCAKernelSpec("fp16", 96, 9, 3, 8, 0).launch_config().kernel_arguments() == {}


@pytest.mark.skipif(not tca_aot.tca_choices.INTERPRETING, reason="only meaningful in interpreter mode")
def test_compile_refuses_under_the_interpreter():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        tca_aot.compile_tca_kernel(TCAKernelSpec("fp16", 96, 9, 3, 8, 0), arch=90)


def test_paper_kernel_builds_for_hopper_without_spills_and_fits_tensorrt_aot():
    rows = compiler_child_json(str(REPO / "benchmarks" / "kernel_resources.py"), "--arch", "90",
                               "--dtypes", "fp16", "bf16", "--warps", "8", "--out", "-")["rows"]
    assert {(r["dtype"], r["shift"]) for r in rows} == {("fp16", 0), ("fp16", 4), ("bf16", 0), ("bf16", 4)}
    for row in rows:
        assert row["stack_bytes"] == 0, row  # 8 warps: no register spill in half precision
        assert row["tensorrt_aot_ok"], row
        assert 0 < row["registers"] <= 255
        assert row["shared_bytes"] <= 48 * 1024


def test_folded_kernel_stacks_its_warps_along_the_window_and_does_not_spill():
    """At 4 warps every dot of the folded kernel must put the warps along the window's 64 tokens
    ([4, 1]): split along the output columns ([1, 4], what one (64, 128) output tile made Triton choose),
    the 16-wide dots are computed twice over (`tca_triton.channel_chunks`). The same with the head loop
    software-pipelined (HEAD_STAGES 2), which stages the next head's weights in shared memory."""
    rows = compiler_child_json(str(REPO / "benchmarks" / "kernel_resources.py"), "--arch", "90", "--kernels",
                               "folded", "--mma", "mma", "--dtypes", "fp16", "bf16", "--warps", "4", "--head-stages",
                               "1", "2", "--out", "-")["rows"]
    assert len(rows) == 8
    shared = {(r["dtype"], r["shift"], r["head_stages"]): r["shared_bytes"] for r in rows}
    assert all(shared[dtype, shift, 2] > shared[dtype, shift, 1] for dtype, shift, _ in shared)
    for row in rows:
        assert row["mma_warp_layouts"] == ["v2 [4, 1]"], row
        assert row["stack_bytes"] == 0, row
        mix = row["instructions_per_warp"]
        # 3 heads x 4 warps: (64/4 rows) x (16 + 64 + 16 + 96 columns) over K = 96, 16, 64, 16 -> 40 MMAs a
        # head; shifted too: its Swin mask rides in the 16 channels of the score dot, no second code copy
        assert mix["tensor_core"] == 3 * 40, row
        assert mix["spill"] == 0 and mix["total"] > mix["tensor_core"] + mix["mufu"]


def test_persistent_folded_kernel_keeps_the_layout_and_counts_its_window_loop_once():
    """The persistent build (programs_per_sm) wraps the window's work in a loop over windows; per window it
    must still run the 120 MMAs of the plain build with the warps along the tokens, and instruction_mix
    must count that loop once whether the compiler kept the head loop inside it (exact sigmoid) or
    unrolled it (tanh, triton 3.8), not NUM_HEADS times."""
    rows = compiler_child_json(str(REPO / "benchmarks" / "kernel_resources.py"), "--arch", "90", "--kernels",
                               "folded", "--mma", "mma", "--dtypes", "fp16", "--warps", "4", "--maxnreg", "168",
                               "--programs-per-sm", "0", "3", "--sigmoid", "tanh", "exact", "--out", "-")["rows"]
    assert len(rows) == 8
    for row in rows:
        assert row["mma_warp_layouts"] == ["v2 [4, 1]"], row
        assert row["instructions_per_warp"]["tensor_core"] == 3 * 40, row
        assert row["registers"] <= 168 and row["maxnreg"] == 168, row
    plain = {(r["sigmoid"], r["shift"]): r for r in rows if r["programs_per_sm"] is None}
    for row in (r for r in rows if r["programs_per_sm"] == 3):
        # the next window's loads and the loop: more instructions per window, never a whole window more
        plain_total = plain[row["sigmoid"], row["shift"]]["instructions_per_warp"]["total"]
        assert plain_total < row["instructions_per_warp"]["total"] < 2 * plain_total, row


def test_output_after_heads_frees_the_accumulators_registers_without_spilling():
    """With the output projection after the last head, the (64, 96) fp32 accumulator is live only at the
    end: the sm_90 build needs fewer registers (wgmma: 84 against 115-118 with triton 3.6 and 3.8; 128
    against 144-148 on mma.sync), still spills nothing, keeps the warps along the tokens and runs the same
    tensor-core instructions (the same dots, unrolled), so more blocks fit each SM."""
    rows = compiler_child_json(str(REPO / "benchmarks" / "kernel_resources.py"), "--arch", "90", "--kernels",
                               "folded", "--dtypes", "fp16", "--warps", "4", "--sigmoid", "exact",
                               "--output-after-heads", "0", "1", "--out", "-")["rows"]
    assert len(rows) == 4
    by_after = {(r["shift"], r["output_after_heads"]): r for r in rows}
    for shift in (0, 4):
        before, after = by_after[shift, False], by_after[shift, True]
        assert after["stack_bytes"] == 0, after
        assert after["registers"] <= before["registers"] - 16, (before, after)
        assert after["blocks_per_sm_by_registers"] > before["blocks_per_sm_by_registers"], (before, after)
        assert after["mma_warp_layouts"] == before["mma_warp_layouts"], (before, after)
        assert after["instructions_per_warp"]["tensor_core"] == before["instructions_per_warp"]["tensor_core"]


def test_register_allocation_rounds_each_warp_to_256_registers():
    """84 registers per thread hold 88 on the SM: 5 blocks of 4 warps, not the 6 that 65536 / (84 * 128) says."""
    path = REPO / "benchmarks" / "kernel_resources.py"
    spec = importlib.util.spec_from_file_location("langbrt_benchmarks_kernel_resources", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    assert module.register_allocation(84) == 88 * 32
    assert module.register_allocation(80) == 80 * 32
    assert module.REGISTERS_PER_SM // (module.register_allocation(84) * 4) == 5


_COUNT_MMA_INSTRUCTIONS = """
import json
from langbrt.kernels.tca_aot import TCAKernelSpec, compile_tca_kernel, mma_instructions
from langbrt.kernels.tca_choices import MMA_PATHS, KernelChoice
counts = {}
for kernel in KernelChoice:
    for mma in MMA_PATHS[kernel]:
        spec = TCAKernelSpec("fp16", 96, 9, 3, 8, 4, num_warps=4, mma=mma, kernel=kernel)
        counts[f"{kernel.value}-{mma.value}"] = mma_instructions(compile_tca_kernel(spec, arch=90))
print(json.dumps(counts))
"""


def test_each_mma_path_builds_the_instructions_it_names_for_hopper():
    """mma: no wgmma at all, in both kernels (the folded one with fewer MMAs); wgmma, the folded kernel's only:
    Triton's own choice, wgmma wherever a dot is big enough for a warpgroup MMA, i.e. every dot of the
    folded kernel, whose results all have 64 rows."""
    counts = compiler_child_json("-c", _COUNT_MMA_INSTRUCTIONS)
    assert set(counts) == {"direct-mma", "folded-mma", "folded-wgmma"}
    for kernel in ("direct", "folded"):
        assert counts[f"{kernel}-mma"]["wgmma"] == 0 and counts[f"{kernel}-mma"]["mma.sync"] > 0
    assert counts["folded-wgmma"]["wgmma"] > 0 and counts["folded-wgmma"]["mma.sync"] == 0
    assert counts["folded-mma"]["mma.sync"] < counts["direct-mma"]["mma.sync"]


_COUNT_PADDED_BUILDS = """
import json
from langbrt.kernels.tca_aot import TCAKernelSpec, compile_tca_kernel, instruction_mix
from langbrt.kernels.tca_choices import KernelChoice
totals = {}
for kernel in KernelChoice:
    for padded in (False, True):
        spec = TCAKernelSpec("fp16", 96, 9, 3, 8, 4, num_warps=4, kernel=kernel, padded=padded)
        totals[f"{kernel.value}-{padded}"] = instruction_mix(compile_tca_kernel(spec, arch=90), 3)["total"]
print(json.dumps(totals))
"""


def test_whole_window_builds_skip_the_padding_checks():
    """A map that splits into whole windows (the preset's 64 x 64 latent) builds without per-token validity
    (`tca_triton._launch`'s PADDED): fewer instructions per window than the any-size build, for both kernels."""
    totals = compiler_child_json("-c", _COUNT_PADDED_BUILDS)
    for kernel in ("direct", "folded"):
        assert totals[f"{kernel}-False"] < totals[f"{kernel}-True"], totals


_BUILD_FOR_AN_OLD_DRIVER = """
import json, subprocess, tempfile, pathlib, triton
from langbrt.kernels.tca_aot import (TCAKernelSpec, check_tensorrt_contract, compile_tca_kernel,
                                     kernel_params, ptx_isa_version, tensorrt_ptx)
from langbrt.kernels.tca_choices import KernelChoice
out = {}
for kernel in KernelChoice:
    newest = compile_tca_kernel(TCAKernelSpec("fp16", 96, 9, 3, 8, 4, kernel=kernel), arch=90)
    old = compile_tca_kernel(TCAKernelSpec("fp16", 96, 9, 3, 8, 4, kernel=kernel), arch=90, ptx_limit=80)
    out[kernel.value] = {"newest": ptx_isa_version(newest.ptx), "old": ptx_isa_version(old.ptx)}
    if kernel is KernelChoice.DIRECT:  # the one TensorRT's plugin calls
        check_tensorrt_contract(old)
        with tempfile.TemporaryDirectory() as tmp:  # what TensorRT hands the driver must assemble
            ptx = pathlib.Path(tmp) / "k.ptx"
            ptx.write_text(tensorrt_ptx(old))
            run = subprocess.run([triton.knobs.nvidia.ptxas.path, "-arch=sm_90a", str(ptx), "-o",
                                  str(ptx) + ".cubin"], capture_output=True, text=True)
        out["trimmed"] = {"params": len(kernel_params(tensorrt_ptx(old))), "ptxas": run.returncode,
                          "stderr": run.stderr[-500:]}
print(json.dumps(out))
"""


def test_a_build_for_an_old_driver_writes_its_ptx_isa_and_the_trimmed_ptx_assembles():
    """A CUDA 12.0 driver takes PTX 8.0 at most: the build keeps to it, and the PTX TensorRT gets (hidden
    parameters cut) still assembles for sm_90a with Triton's ptxas."""
    builds = compiler_child_json("-c", _BUILD_FOR_AN_OLD_DRIVER)
    for kernel in ("direct", "folded"):
        assert builds[kernel]["old"] == 80 < builds[kernel]["newest"], builds
    assert builds["trimmed"]["params"] == 14 and builds["trimmed"]["ptxas"] == 0, builds["trimmed"]


def test_the_widest_kernel_window_fits_the_shared_memory_of_every_gpu_from_sm_80():
    """dispatch.MAX_KERNEL_WINDOW's builds, both kernels, shifted and not, must fit the 99 KB per block that
    sm_86 / sm_89 give (A100 163 KB, H100 227 KB): `auto` launches them for any window up to it. One window
    wider pads to 512 tokens and the direct kernel needed 193 KB, past an A100; at 23-32 229 KB and more,
    past an H100 (benchmarks/results/kernel-resources-triton3.8-wide-windows-2026-11-27.json)."""
    from langbrt.kernels.dispatch import MAX_KERNEL_WINDOW

    rows = compiler_child_json(str(REPO / "benchmarks" / "kernel_resources.py"), "--arch", "90", "--kernels",
                               "direct", "folded", "--dtypes", "fp16", "--warps", "8", "--windows",
                               str(MAX_KERNEL_WINDOW), "--out", "-")["rows"]
    assert {(r["kernel"], r["window"], r["shift"]) for r in rows} == {
        (kernel, MAX_KERNEL_WINDOW, shift) for kernel in ("direct", "folded") for shift in (0, MAX_KERNEL_WINDOW // 2)}
    assert all(r["shared_bytes"] <= 99 * 1024 for r in rows), rows


PLUGIN_FIT_SCRIPT = """
import json
from langbrt.export.tensorrt_plugin import PLUGIN_MAX_WINDOW, plugin_kernel_spec, tactic_warps
from langbrt.kernels.tca_aot import check_tensorrt_contract, compile_tca_kernel

def fits(window, tactic):
    try:
        check_tensorrt_contract(compile_tca_kernel(plugin_kernel_spec(3, window, window // 2, 96, 9, tactic), 90))
    except ValueError as err:
        return str(err)
    return "ok"

widest = [fits(PLUGIN_MAX_WINDOW, tactic) for tactic in tactic_warps()]
print(json.dumps({"widest": widest, "wider": fits(PLUGIN_MAX_WINDOW + 1, 1)}))
"""


def test_the_plugins_widest_window_fits_tensorrts_aot_launch_and_one_wider_does_not():
    """tensorrt_plugin.PLUGIN_MAX_WINDOW, which langbrt-export holds a plugin export to, from the compiled kernel
    itself: at that window every tactic's build (each warp count) fits TensorRT's AOT launch, one wider does
    not (its shared memory), so the engine build would fail on the GPU."""
    result = compiler_child_json("-c", PLUGIN_FIT_SCRIPT)
    assert result["widest"] == ["ok"] * len(result["widest"]), result
    assert "shared memory" in result["wider"], result
