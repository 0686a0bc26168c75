"""Ahead-of-time builds of the fused TCA kernel: PTX and cubin for a named GPU, with or without a GPU here.

Two users need the kernel compiled outside a launch:
- TensorRT's ahead-of-time plugin (`export/tensorrt_plugin.py`) bakes the PTX into the engine, so the
  engine runs with no Python (trtexec, Triton Inference Server). TensorRT calls the kernel with its
  arguments in one fixed order, inputs, then int32 scalars, then outputs, which is why `tca_fwd_kernel`
  takes (x, map, weights..., alpha, H, W, out): `kernel_params` reads the order back from the PTX.
- A machine without a GPU can still prove that the kernel compiles for a real target (not only in the
  interpreter) and read what ptxas made of it: registers, spilled bytes and shared memory per block
  (`kernel_resources`), the numbers behind `NUM_WARPS_CHOICES` in `tca_launch_configs.py`.

Compiling needs Triton's compiler, not its interpreter: with `TRITON_INTERPRET=1` set before import
(the CPU test setup) `compile_tca_kernel` refuses, and tests call it from a child process.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import ptx_get_version
from triton.compiler import ASTSource

from . import tca_choices, tca_launch_configs, tca_triton
from .plugin_node import NODE_INPUTS

DTYPES = ("fp16", "bf16", "fp32")
WARP_SIZE = 32
NUM_TENSOR_INPUTS = len(NODE_INPUTS)  # x, map_features, q/k/v/out weights and biases, alpha
NUM_SCALARS = 2  # H, W
# A kernel launched without cuFuncSetAttribute may use at most this much shared memory per block; TensorRT's
# AOT launcher does not opt in to more.
DEFAULT_SHARED_LIMIT = 48 * 1024


@dataclass(frozen=True)
class TCAKernelSpec:
    """What one compiled kernel is specialised for: the model's shapes, the dtype and the launch width."""

    dtype: str  # "fp16" | "bf16" | "fp32": every tensor argument and the output
    channels: int  # C
    map_channels: int  # Cm
    num_heads: int
    window_size: int
    shift: int
    num_warps: int = 8
    fast_sigmoid: bool = True
    mma: tca_choices.MmaChoice | None = None  # None: the kernel's default (tca_choices.DEFAULT_MMA)
    kernel: tca_choices.KernelChoice = tca_choices.KernelChoice.DIRECT  # TensorRT's plugin calls DIRECT
    maxnreg: int | None = None  # ptxas register cap per thread
    padded: bool = True  # build for maps whose size is not a multiple of the window (any size)
    head_stages: int = 1  # the folded kernel's head-loop pipelining depth (tca_launch_configs.LaunchConfig); DIRECT: 1
    programs_per_sm: int | None = None  # the folded kernel's persistent build (tca_launch_configs.LaunchConfig)
    output_after_heads: bool = False  # the folded kernel's output projection after its last head (LaunchConfig)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if self.channels % self.num_heads:
            raise ValueError(f"{self.channels} channels do not split into {self.num_heads} heads")
        if not 0 <= self.shift < self.window_size:
            raise ValueError(f"shift {self.shift} must be in [0, {self.window_size})")
        if self.mma is not None and self.mma not in tca_choices.MMA_PATHS[self.kernel]:
            paths = ", ".join(p.value for p in tca_choices.MMA_PATHS[self.kernel])
            raise ValueError(f"the {self.kernel.value} kernel builds only {paths} (tca_choices.MMA_PATHS)")
        if self.kernel is not tca_choices.KernelChoice.FOLDED and (self.head_stages != 1 or self.programs_per_sm
                                                                   or self.output_after_heads):
            raise ValueError("head_stages, programs_per_sm and output_after_heads are the folded kernel's: the "
                             "direct kernel's head loop is neither pipelined nor unrolled and it is never persistent")

    @property
    def mma_path(self) -> tca_choices.MmaChoice:
        """The MMA path this build uses: `mma`, or the kernel's default."""
        return self.mma if self.mma is not None else tca_choices.DEFAULT_MMA[self.kernel]

    def launch_config(self) -> tca_launch_configs.LaunchConfig:
        """The launch this build is of, as the autotuner would time it."""
        folded = self.kernel is tca_choices.KernelChoice.FOLDED
        if not folded:
            return tca_launch_configs.LaunchConfig(self.num_warps, self.maxnreg)
        return tca_launch_configs.LaunchConfig(self.num_warps, self.maxnreg, self.head_stages, self.programs_per_sm,
                                       self.output_after_heads)


@dataclass(frozen=True)
class CompiledTCAKernel:
    """One build: the entry's name, its PTX and cubin, and what a launcher must know to call it."""

    spec: TCAKernelSpec
    arch: int  # compute capability as major * 10 + minor, e.g. 90
    name: str
    ptx: str
    cubin: bytes
    shared_bytes: int  # dynamic shared memory per block
    scratch_bytes: int  # global + profile scratch Triton asks the launcher for; 0 for this kernel
    ttgir: str = ""  # Triton's GPU IR: the layouts it chose (`mma_warp_layouts`)

    @property
    def block_threads(self) -> int:
        return self.spec.num_warps * WARP_SIZE


@dataclass(frozen=True)
class KernelResources:
    """ptxas's account of one build, per thread (registers, stack) and per block (shared memory)."""

    registers: int
    stack_bytes: int  # > 0 means the kernel spills registers to local memory
    static_shared_bytes: int
    dynamic_shared_bytes: int


def _signature(fn: triton.runtime.JITFunction, dtype: str, fp32_arguments: tuple[str, ...]) -> dict[str, str]:
    """Every tensor argument (those before H) a pointer to `dtype` (to fp32 if named in `fp32_arguments`),
    then the int32 sizes and the output."""
    tensors = fn.arg_names[:fn.arg_names.index("H")]
    signature = {name: "*" + ("fp32" if name in fp32_arguments else dtype) for name in tensors}
    signature.update({"H": "i32", "W": "i32", "out_ptr": "*" + dtype})
    return signature


def _aligned_pointers(fn: triton.runtime.JITFunction, signature: dict[str, str]) -> dict[tuple[int], list]:
    """Tell the compiler every pointer argument is 16-byte aligned, as a launch from Python does.

    Triton's launcher marks a tensor whose address is a multiple of 16 (`tt.divisibility`), and only then
    may a row of the kernel's tiles be moved with 128-bit loads and stores. Without the mark the build
    moves every element on its own: on sm_90, fp16, 4 warps, 91 against 356 loads and 8 against 64 stores
    per warp, 3 000 against 5 850 instructions and 183 registers against 255 plus a spill
    (`benchmarks/kernel_resources.py`). Safe to promise: PyTorch's CUDA allocator and TensorRT hand out
    buffers aligned to at least 256 bytes.
    """
    return {(fn.arg_names.index(name),): [["tt.divisibility", 16]]
            for name, kind in signature.items() if kind.startswith("*")}


def compile_tca_kernel(spec: TCAKernelSpec, arch: int | None = None, ptx_limit: int | None = None) -> CompiledTCAKernel:
    """Compile the kernel `spec` names for `spec` and `arch` (None: the GPU Triton sees, as TensorRT's
    build does). The PTX is at most ISA `ptx_limit` (e.g. 80 for 8.0); None: for a build for this GPU, what
    its driver takes (`driver_ptx_version`), else the newest Triton's ptxas writes."""
    if tca_choices.INTERPRETING:
        raise RuntimeError("AOT builds need Triton's compiler: TRITON_INTERPRET=1 was set before import")
    fn = tca_triton._JIT_KERNELS[spec.kernel]
    constants = tca_triton.kernel_constants(
        spec.channels, spec.map_channels, spec.num_heads, spec.window_size, spec.shift,
        low_precision_dot=spec.dtype != "fp32", fast_sigmoid=spec.fast_sigmoid, padded=spec.padded,
        kernel=spec.kernel,
    ) | spec.launch_config().kernel_arguments()
    signature = _signature(fn, spec.dtype, tca_triton.FP32_ARGUMENTS[spec.kernel]) | {
        name: "constexpr" for name in constants}
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(name),): value for name, value in constants.items()},
                       attrs=_aligned_pointers(fn, signature))
    target = GPUTarget("cuda", arch, WARP_SIZE) if arch is not None else None
    options = {"num_warps": spec.num_warps, "num_stages": tca_launch_configs.NUM_STAGES, "maxnreg": spec.maxnreg}
    limit = ptx_limit if ptx_limit is not None or arch is not None else driver_ptx_version()
    with tca_choices.mma_build_scope(spec.mma_path):
        compiled = triton.compile(source, target=target, options=options)
        if limit is not None and ptx_isa_version(compiled.asm["ptx"]) > limit:
            compiled = triton.compile(source, target=target, options=options | {"ptx_version": limit})
    meta = compiled.metadata
    built_arch = arch if arch is not None else int(meta.target.arch)
    scratch = int(getattr(meta, "global_scratch_size", 0) or 0) + int(getattr(meta, "profile_scratch_size", 0) or 0)
    return CompiledTCAKernel(spec=spec, arch=built_arch, name=meta.name, ptx=compiled.asm["ptx"],
                             cubin=compiled.asm["cubin"], shared_bytes=int(meta.shared), scratch_bytes=scratch,
                             ttgir=compiled.asm["ttgir"])


_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\((.*?)\)", re.S)
_PARAM = re.compile(r"\.param\s+\.(\w+)(\s+\.ptr)?")


def kernel_params(ptx: str) -> list[str]:
    """The entry's parameter kinds in order: 'ptr' for a pointer, else the PTX type ('u32', 'f32', ...)."""
    match = _ENTRY.search(ptx)
    if match is None:
        raise ValueError("no .entry in this PTX")
    return ["ptr" if ptr else kind for kind, ptr in _PARAM.findall(match.group(2))]


_PTX_VERSION = re.compile(r"^\.version\s+(\d+)\.(\d+)", re.M)


def ptx_isa_version(ptx: str) -> int:
    """The PTX's `.version` as major * 10 + minor (8.8 -> 88)."""
    match = _PTX_VERSION.search(ptx)
    if match is None:
        raise ValueError("no .version in this PTX")
    return int(match.group(1)) * 10 + int(match.group(2))


def driver_ptx_version() -> int | None:
    """The newest PTX ISA this machine's CUDA driver compiles (major * 10 + minor), or None without one.

    Why: TensorRT hands the plugin's PTX to the driver to compile, and a driver refuses an ISA newer than
    its own (CUDA_ERROR_UNSUPPORTED_PTX_VERSION), while Triton writes the newest its bundled ptxas knows
    (triton 3.8: PTX 8.8, which needs a CUDA 12.9 driver; a 535 driver is CUDA 12.2, PTX 8.2)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return ptx_version_of_cuda(version.value // 1000, version.value % 1000 // 10)


def ptx_version_of_cuda(major: int, minor: int) -> int:
    """The PTX ISA a CUDA release introduced: 12.0 -> 80, 12.4 -> 84, 12.6 -> 85 (12.5 and 12.6 share 8.5),
    12.8 -> 87, 12.9 -> 88, 13.0 -> 90; Triton's own table, which it uses for its ptxas."""
    return ptx_get_version(f"{major}.{minor}")


def tensorrt_ptx(compiled: CompiledTCAKernel) -> str:
    """The build's PTX with the entry's parameters cut to the declared ones (inputs, scalars, output).

    Why: Triton appends hidden scratch-pointer parameters, and TensorRT's AOT launcher passes exactly the
    declared arguments, so for each parameter past them the driver would read an argument pointer beyond
    the end of TensorRT's array. Only parameters the kernel body never reads are cut; one that it reads is
    an error (`check_tensorrt_contract`).
    """
    if compiled.spec.kernel is not tca_choices.KernelChoice.DIRECT:
        raise ValueError(f"{compiled.name}: TensorRT's plugin calls the direct kernel, whose arguments it knows")
    match = _ENTRY.search(compiled.ptx)
    if match is None:
        raise ValueError(f"{compiled.name}: no .entry in its PTX")
    declarations = match.group(2).split(",")
    keep = NUM_TENSOR_INPUTS + NUM_SCALARS + 1
    for extra in declarations[keep:]:
        name = extra.split()[-1]
        if len(re.findall(rf"\b{re.escape(name)}\b", compiled.ptx)) > 1:
            raise ValueError(f"{compiled.name} reads its hidden parameter {name}: TensorRT cannot launch it")
    body = ",".join(declarations[:keep]) + ("\n" if len(declarations) > keep else "")
    return compiled.ptx[:match.start(2)] + body + compiled.ptx[match.end(2):]


_RESOURCE_LINE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)")


def kernel_resources(compiled: CompiledTCAKernel) -> KernelResources:
    """Registers, spill stack and static shared memory of the cubin, read with Triton's bundled cuobjdump."""
    report = _cuobjdump(compiled, "--dump-resource-usage")
    match = _RESOURCE_LINE.search(report)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no resource line for {compiled.name}:\n{report}")
    registers, stack, static_shared = (int(g) for g in match.groups())
    return KernelResources(registers, stack, static_shared, compiled.shared_bytes)


def _cuobjdump(compiled: CompiledTCAKernel, *flags: str) -> str:
    """Triton's bundled cuobjdump run on the build's cubin."""
    tool = triton.knobs.nvidia.cuobjdump.path
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / f"{compiled.name}.cubin"
        cubin.write_bytes(compiled.cubin)
        return subprocess.run([tool, *flags, str(cubin)], capture_output=True, text=True, check=True).stdout


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)([^;]*);")
_BACKWARD_TARGET = re.compile(r"0x([0-9a-f]+)")
# Opcode families worth telling apart when comparing builds.
INSTRUCTION_CLASSES = {
    "tensor_core": ("HMMA", "HGMMA"), "mufu": ("MUFU",), "global_memory": ("LDG", "STG"),
    "shared_memory": ("LDS", "STS", "LDSM", "STSM"), "spill": ("LDL", "STL"), "barrier": ("BAR",),
}


def instruction_mix(compiled: CompiledTCAKernel, loop_trips: int,
                    outermost_loop_trips: int | None = None) -> dict[str, int]:
    """Instructions one warp executes per program, by opcode family (`INSTRUCTION_CLASSES`) and in total.

    Read off the SASS: straight-line code counts once, each loop body (a backward branch's range)
    `loop_trips` times (the kernels' loops walk the heads), except that with `outermost_loop_trips` a
    loop inside no other loop counts that many times: a persistent build's window loop, whose head loop
    may be a loop inside it or unrolled by the compiler (1 gives the count per window plus the program's
    prologue). Both sides of a branch count (neither kernel branches around a window's work: every window
    of a build runs the same code). An estimate for comparing builds, not a profile: the kernels are
    latency-bound (benchmarks/results/ncu-*.txt), so fewer instructions per warp, like fewer registers,
    is what a faster build is made of.
    """
    code = [(int(address, 16), opcode, operands)
            for address, opcode, operands in _SASS_LINE.findall(_cuobjdump(compiled, "-sass"))
            if opcode != "NOP"]
    loops = []  # (first, last) address of each backward branch's body
    for address, opcode, operands in code:
        target = _BACKWARD_TARGET.search(operands) if opcode == "BRA" else None
        if target is not None and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    trips = {loop: loop_trips for loop in loops}
    if outermost_loop_trips is not None:
        for loop in loops:
            if not any(other[0] <= loop[0] and loop[1] < other[1] for other in loops):
                trips[loop] = outermost_loop_trips
    counts: Counter[str] = Counter()
    for address, opcode, _ in code:
        weight = 1
        for (first, last), n in trips.items():
            if first <= address <= last:
                weight *= n
        counts[opcode] += weight
    mix = {name: sum(counts[op] for op in opcodes) for name, opcodes in INSTRUCTION_CLASSES.items()}
    mix["total"] = sum(counts.values())
    return mix


def mma_instructions(compiled: CompiledTCAKernel) -> dict[str, int]:
    """How many warpgroup MMAs (wgmma) and warp MMAs (mma.sync) the build's PTX holds: which tensor-core
    path Triton took (tca_choices.MmaChoice)."""
    return {"wgmma": compiled.ptx.count("wgmma.mma_async"), "mma.sync": compiled.ptx.count("mma.sync")}


_MMA_WARPS = re.compile(r"nvidia_mma<\{versionMajor = (\d), versionMinor = \d+, warpsPerCTA = \[([\d, ]+)\]")


def mma_warp_layouts(compiled: CompiledTCAKernel) -> list[str]:
    """Each tensor-core layout Triton chose, as 'v<MMA version> [warps per dim]', e.g. 'v2 [4, 1]': how the
    warps split a dot's result (tca_triton.channel_chunks says why that matters)."""
    return sorted({f"v{version} [{warps}]" for version, warps in _MMA_WARPS.findall(compiled.ttgir)})


def check_tensorrt_contract(compiled: CompiledTCAKernel, shared_limit: int = DEFAULT_SHARED_LIMIT) -> None:
    """Raise ValueError unless TensorRT's AOT launcher can call this build as it is.

    It passes the inputs, then int32 scalars, then the output, allocates no scratch memory and gives a
    block at most `shared_limit` bytes of shared memory. Triton's hidden scratch pointers after the
    declared arguments are cut from the PTX TensorRT gets (`tensorrt_ptx`), which must leave exactly those.
    """
    params = kernel_params(tensorrt_ptx(compiled))
    declared = ["ptr"] * NUM_TENSOR_INPUTS + ["u32"] * NUM_SCALARS + ["ptr"]
    if params != declared:
        raise ValueError(f"{compiled.name}: parameters {params} are not inputs, int32 scalars, output")
    if compiled.scratch_bytes:
        raise ValueError(f"{compiled.name} needs {compiled.scratch_bytes} B of scratch memory")
    if compiled.shared_bytes > shared_limit:
        raise ValueError(f"{compiled.name} ({compiled.spec.dtype}, {compiled.spec.num_warps} warps) needs "
                         f"{compiled.shared_bytes} B of shared memory, over the {shared_limit} B a launch gets")
