"""What a diffusion model is conditioned on, as one typed object per kind: none, class label, vector, text.

The contract every kind implements is `Condition` (`base.py`, see its docstring); each kind is one file.
"""

from difflab.conditions.base import (
                                     GUIDANCE_KEYS,
                                     INPUT_KEYS,
                                     Condition,
                                     Input,
                                     NoCondition,
                                     Requests,
                                     TensorCondition,
                                     legacy_condition,
                                     with_condition,
)
from difflab.conditions.label import ClassLabel
from difflab.conditions.text import TextPrompt
from difflab.conditions.vector import Vector

__all__ = ["GUIDANCE_KEYS", "INPUT_KEYS", "ClassLabel", "Condition", "Input", "NoCondition", "Requests", "TensorCondition",
           "TextPrompt", "Vector", "legacy_condition", "with_condition"]
