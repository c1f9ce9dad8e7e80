"""How well predicted vectors match true ones, per column: MAE (raw and std units) and the coefficient of determination.

For column j over N images, with true values y, predictions y_hat, and the training split's mean m and std s
(`CondStats`), in std units z = (y - m) / s:

    MAE_j      = mean |y_hat - y|                      (raw units)
    MAE_std_j  = mean |z_hat - z| = MAE_j / s_j         (std units)
    R2_j       = 1 - sum (z_hat - z)^2 / sum (z - mean z)^2

R2 is the same in raw and std units (an affine change of units cancels); 0 is what predicting the mean of the
true values scores, 1 is exact, and predicting the training mean scores below 0 when the split means differ.
The sums are torchmetrics states reduced across ranks, so every rank gets the numbers of the whole split.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


class VectorErrors(Metric):
    """Per-column MAE (raw and std units) and R2 of predicted against true raw vectors [N, D] (see the module docstring)."""

    full_state_update = False

    def __init__(self, stats: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stats = stats  # CondStats: the columns and the std units
        d = stats.dim
        for name in ("abs_std", "sq_err", "sum_z", "sum_z2"):
            self.add_state(name, default=torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, predicted: Tensor, true: Tensor) -> None:  # type: ignore[override]
        """`predicted`, `true`: raw values [N, D] in the column order of `stats`."""
        z_hat = self.stats.zscore(predicted.to(self.device)).double()  # (N, D)
        z = self.stats.zscore(true.to(self.device)).double()           # (N, D)
        self.abs_std += (z_hat - z).abs().sum(0)
        self.sq_err += (z_hat - z).pow(2).sum(0)
        self.sum_z += z.sum(0)
        self.sum_z2 += z.pow(2).sum(0)
        self.total += z.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """{"mae": [D] raw units, "mae_std": [D] std units, "r2": [D]} (R2 is NaN for a column constant in the split)."""
        n = int(self.total)
        if n == 0:
            raise ValueError("the vector errors need at least one image with a true vector")
        mae_std = self.abs_std / n
        std = torch.tensor(self.stats.std, dtype=torch.float64, device=mae_std.device)
        ss_tot = self.sum_z2 - self.sum_z.pow(2) / n  # sum (z - mean z)^2
        r2 = torch.where(ss_tot > 1e-12, 1 - self.sq_err / ss_tot.clamp_min(1e-12), torch.full_like(ss_tot, float("nan")))
        return {"mae": mae_std * std, "mae_std": mae_std, "r2": r2}

    def flat(self, prefix: str = "") -> dict[str, float]:
        """compute() as flat scalars: `<prefix>mae/<column>` ... and the column means `<prefix>mae`, `<prefix>mae_std`,
        `<prefix>r2`."""
        out: dict[str, float] = {}
        for key, values in self.compute().items():
            out[f"{prefix}{key}"] = float(values.nanmean())
            out.update({f"{prefix}{key}/{c}": float(v) for c, v in zip(self.stats.columns, values.tolist())})
        return out
