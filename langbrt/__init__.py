"""LangBRT: remove the facial blemishes a person names in words, and leave every other pixel alone.

Importing this package loads no weights, probes no device and imports nothing heavy: the public names below
load their modules (and torch) on first use. Why: the console scripts (`langbrt.console`) must be able to
turn a Ctrl-C during the seconds torch takes to import into one line, which needs their own module to
import before torch does.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import LangBRTConfig
    from .errors import CheckpointError, LangBRTError, LangBRTInputError, OutputWriteError
    from .model import LangBRT, LangBRTOutput

__all__ = ["CheckpointError", "LangBRT", "LangBRTConfig", "LangBRTError", "LangBRTInputError", "LangBRTOutput",
           "OutputWriteError"]
__version__ = "0.1.0"

_MODULE_OF = {"LangBRTConfig": ".config", "CheckpointError": ".errors", "LangBRTError": ".errors",
              "LangBRTInputError": ".errors", "OutputWriteError": ".errors", "LangBRT": ".model",
              "LangBRTOutput": ".model"}


def __getattr__(name: str) -> Any:
    """A public name from its module, or a submodule (`langbrt.config`), imported on first use."""
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
