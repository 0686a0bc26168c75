"""Export a LangBRT for deployment: ONNX (baked prompt table), TensorRT engines, Triton repositories.

`export_model` is the one verb (the `langbrt-export` CLI calls it); each format has its own module.
"""

from .exporter import FORMATS, ExportInterrupted, ExportOptions, ExportResult, export_model
from .graph import ExportableLangBRT, baked_table
from .onnx_export import export_onnx, read_onnx_metadata
from .tensorrt_export import TensorRTUnavailable, build_engine, check_engine_compatible
from .triton_repo import write_triton_repository

__all__ = [
    "FORMATS",
    "ExportInterrupted",
    "ExportOptions",
    "ExportResult",
    "ExportableLangBRT",
    "TensorRTUnavailable",
    "baked_table",
    "build_engine",
    "check_engine_compatible",
    "export_model",
    "export_onnx",
    "read_onnx_metadata",
    "write_triton_repository",
]
