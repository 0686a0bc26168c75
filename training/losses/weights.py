"""Weights of the training objective (paper eq. 11): one number per term, 0 switches the term off.

Ablations are run by zeroing terms from the command line, so the weights live in one dataclass the trainer
passes down, and `active()` is the one place that says which terms a run computes.
"""

import math
from dataclasses import dataclass, fields

from langbrt.errors import ConfigValueError


@dataclass
class LossWeights:
    """Defaults are the paper's (sec. 4.1.2): beta = 10 (eq. 9), gamma = 1 and eta = 1 (eq. 11)."""

    detection: float = 1.0  # eta, eq. 5
    component: float = 1.0  # eta, eq. 6
    adversarial: float = 1.0  # eq. 7 (generator side)
    l1: float = 1.0  # eq. 9, pixel term
    perceptual: float = 10.0  # beta, eq. 9, VGG-19 term
    semantic: float = 1.0  # gamma, eq. 10/11, Alpha-CLIP term

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                problem = f"must be a finite number >= 0 (0 turns the term off), got {value!r}"
                raise ConfigValueError(field.name, problem, f"--{field.name.replace('_', '-')}-weight {problem}")

    def active(self) -> list[str]:
        """Names of the terms with a weight > 0, in declaration order."""
        return [field.name for field in fields(self) if getattr(self, field.name) > 0]
