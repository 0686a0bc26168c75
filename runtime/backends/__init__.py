"""Inference backends behind one `Backend` protocol; each imports its engine library only when loaded."""

from .base import Backend, BackendName, BackendOutput, backend_for_path

__all__ = ["Backend", "BackendName", "BackendOutput", "backend_for_path", "load_backend"]


def load_backend(path: str, backend: str = "auto", device: str | None = None,
                 precision: str | None = None) -> Backend:
    """Open `path` with the named backend (`auto`: by the path: folder -> torch, .onnx, .engine/.plan).

    `device` is checked here, as the CLIs check `--device`, so that every backend takes the same names: the
    ONNX Runtime one used to run "mps" or "gpu" on the CPU without a word, and fail on a torch.device.
    """
    from langbrt.cli_args import DEVICE_HELP, is_device_name
    from langbrt.errors import LangBRTInputError

    device = str(device) if device else None  # a torch.device too; "" as None: the default device
    if device is not None and not is_device_name(device):
        raise LangBRTInputError(f"device {device!r} is not one LangBRT runs on; {DEVICE_HELP}")
    try:
        name = BackendName(backend)
    except ValueError:
        known = ", ".join(b.value for b in BackendName)
        raise LangBRTInputError(f"unknown backend {backend!r}; use one of {known}") from None
    if name is BackendName.AUTO:
        name = backend_for_path(path)
    if name is BackendName.TORCH:
        from .torch_backend import TorchBackend

        return TorchBackend.load(path, device, precision or "fp32")
    if name is BackendName.ONNXRUNTIME:
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend.load(path, device, precision)
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend.load(path, device, precision)
