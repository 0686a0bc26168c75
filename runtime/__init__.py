"""LangBRT inference runtime: backends (torch, onnxruntime, tensorrt), the `Retoucher`, and the CLIs.

Imports no training code and no export code, only `langbrt` and exported artifacts; a backend's engine
library (onnxruntime, tensorrt) and CUDA are touched only when that backend is loaded.
"""

from .retoucher import Retoucher, RetouchResult

__all__ = ["RetouchResult", "Retoucher"]
