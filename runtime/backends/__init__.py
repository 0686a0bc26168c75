"""Inference backends behind one `Backend` protocol; each imports its engine library only when loaded."""

from typing import Any

from .base import Backend, BackendName, BackendOutput, backend_for_path

__all__ = ["Backend", "BackendName", "BackendOutput", "backend_for_path", "check_backend", "load_backend"]


def check_backend(path: str, backend: str = "auto", device: str | None = None,
                  precision: str | None = None) -> BackendName:
    """The backend that would load `path`, or a LangBRTError naming what the flags or this machine lack (fp16
    on a CPU, TensorRT without a GPU, a checkpoint given to onnxruntime), without loading the model.

    `device` is checked here, as the CLIs check `--device`, so that every backend takes the same names: the
    ONNX Runtime one used to run "mps" or "gpu" on the CPU without a word, and fail on a torch.device.
    Why a step of its own: `langbrt-serve` loads its model after binding its port, so it asks this first and
    refuses such flags in one line with exit 2, as `langbrt-infer` does.
    """
    from langbrt.cli_args import DEVICE_HELP, is_device_name
    from langbrt.errors import LangBRTInputError

    if device is not None and not is_device_name(device):
        raise LangBRTInputError(f"device {device!r} is not one LangBRT runs on; {DEVICE_HELP}")
    try:
        name = BackendName(backend)
    except ValueError:
        known = ", ".join(b.value for b in BackendName)
        raise LangBRTInputError(f"unknown backend {backend!r}; use one of {known}") from None
    if name is BackendName.AUTO:
        name = backend_for_path(path)
    _backend_class(name).check(path, device, precision)
    return name


def load_backend(path: str, backend: str = "auto", device: str | None = None,
                 precision: str | None = None) -> Backend:
    """Open `path` with the named backend (`auto`: by the path: folder -> torch, .onnx, .engine/.plan), once
    `check_backend` found nothing against it."""
    device = str(device) if device else None  # a torch.device too; "" as None: the default device
    name = check_backend(path, backend, device, precision)
    return _backend_class(name).load(path, device, precision)


def _backend_class(name: BackendName) -> Any:
    """The class behind a resolved backend name (not AUTO), its module imported only now."""
    if name is BackendName.TORCH:
        from .torch_backend import TorchBackend

        return TorchBackend
    if name is BackendName.ONNXRUNTIME:
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend
