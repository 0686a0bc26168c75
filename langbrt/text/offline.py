"""Keep model loading off the network.

LangBRT never downloads weights at run time (users run it offline; silent downloads are the top complaint
about face-restoration tools). Loaders get local paths only, and this context also sets the Hugging Face
offline switches so that any library code path that would still reach for the hub fails fast instead.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextmanager
def hub_offline() -> Iterator[None]:
    """Set HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 for the duration, then restore the caller's values."""
    saved = {var: os.environ.get(var) for var in _OFFLINE_VARS}
    os.environ.update({var: "1" for var in _OFFLINE_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
