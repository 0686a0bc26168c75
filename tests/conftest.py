"""Session-wide test setup: run Triton kernels in Triton's CPU interpreter when there is no GPU.

Triton decides interpreter-or-compiler when `@triton.jit` decorates a kernel, i.e. when
`langbrt.kernels.tca_triton` is first imported, from the TRITON_INTERPRET environment variable. pytest
imports this file before any test module, so setting the variable here reaches every kernel no matter
which test file imports it first. `import torch` does not import triton (torch 2.14), so asking
`torch.cuda.is_available()` here is cheap and leaves triton unloaded. With a GPU the variable is left
alone and the GPU tests exercise the compiled kernel.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: CI's two cores are shared with other tests, where one thread is
    faster (OpenMP threads wait on each other when a core is taken) and its results deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
