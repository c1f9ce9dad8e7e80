"""The code behind the root scripts train.py, sample.py (and later evaluate.py, compare.py)."""

from difflab.utils.config import register_resolvers

register_resolvers()
