"""LangBRT: remove the facial blemishes a person names in words, and leave every other pixel alone.

Importing this package loads no weights and probes no device.
"""

from .config import LangBRTConfig
from .errors import CheckpointError, LangBRTError, LangBRTInputError
from .model import LangBRT, LangBRTOutput

__all__ = ["CheckpointError", "LangBRT", "LangBRTConfig", "LangBRTError", "LangBRTInputError", "LangBRTOutput"]
__version__ = "0.1.0"
