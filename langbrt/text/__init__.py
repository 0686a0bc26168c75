"""Text side of LangBRT: prompt normalisation, frozen text encoders, and the prompt-embedding bank.

Importing this package is cheap: transformers and open_clip are imported only when an encoder loads.
"""

from langbrt.text.encoder import TextEncoder
from langbrt.text.minilm import MiniLMTextEncoder
from langbrt.text.open_clip_backend import OpenClipTextEncoder
from langbrt.text.prompt_bank import PromptBank
from langbrt.text.prompts import MAX_PROMPT_CHARS, normalize_prompt
from langbrt.text.registry import TEXT_WEIGHTS_FLAG, default_text_encoder, text_encoder_from_name

__all__ = [
    "MAX_PROMPT_CHARS",
    "TEXT_WEIGHTS_FLAG",
    "MiniLMTextEncoder",
    "OpenClipTextEncoder",
    "PromptBank",
    "TextEncoder",
    "default_text_encoder",
    "normalize_prompt",
    "text_encoder_from_name",
]
