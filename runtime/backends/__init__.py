"""Inference backends behind one `Backend` protocol; each imports its engine library only when loaded."""

from .base import Backend, BackendName, BackendOutput, backend_for_path

__all__ = ["Backend", "BackendName", "BackendOutput", "backend_for_path", "load_backend"]


def load_backend(path: str, backend: str = "auto", device: str | None = None,
                 precision: str | None = None) -> Backend:
    """Open `path` with the named backend (`auto`: by the path: folder -> torch, .onnx, .engine/.plan)."""
    from langbrt.errors import LangBRTInputError

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
