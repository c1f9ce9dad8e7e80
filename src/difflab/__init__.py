"""difflab: train, sample and compare diffusion models on the same footing.

The Python API is `difflab.load`, `difflab.train`, `difflab.compose` (see `difflab.api`); it is imported on first
use, so `import difflab` and the lower packages stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DiffusionModel", "Regressor", "Samples", "TrainResult", "compose", "load", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from difflab.api import (  # noqa: F401
        DiffusionModel,
        Regressor,
        Samples,
        TrainResult,
        compose,
        load,
        train,
    )


def __getattr__(name: str) -> Any:
    """`difflab.load` and the rest of the API, imported when first asked for."""
    if name in __all__:
        import difflab.api  # the API is the top layer: imported on first use, never by the packages below it

        return getattr(difflab.api, name)
    raise AttributeError(f"module 'difflab' has no attribute {name!r}")
