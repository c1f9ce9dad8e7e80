"""Conditions beyond one tensor: text conditions with pooled embeddings and size ids (SDXL), prompts of different
lengths in one batch, and conditions that change with the sampler step (prompt editing, alternation).

A denoiser's `cond` is None, a Tensor [B, ...], or one of

    TextCond         context [B, L, D] (cross-attention tokens), pooled [B, P] | None (SDXL's pooled text
                     embedding), time_ids [B, 6] | None (SDXL's original size, crop top-left, target size), and
                     lengths [B] | None: row b attends to context[b, :lengths[b]] only (prompts of 1, 2, ... chunks
                     of 77 tokens in one batch; the rest is padding that no network sees)
    StepConditions   conditions that depend on the sampler step; `samplers.generate` binds them to the grid it
                     runs (`on_grid(sigmas)`), giving
    GridConditions   the distinct conditions `table` [M, ...] and `index` [B, N]: row b uses table[index[b, i]] in
                     step i of the N-step grid `sigmas`; `at(sigma)` is the batch's condition at a noise level.

Noise level -> step. Step i runs from sigmas[i] down to sigmas[i + 1]; a query at noise level sigma belongs to step

    i(sigma) = #{ j in 1 .. N-1 : sigmas[j] >= sigma }        (clamped to 0 .. N-1)

so every evaluation of step i at sigmas[i] and between the two levels (a midpoint, an ancestral sub-step) gets step
i's condition, and an evaluation exactly at sigmas[i + 1] (Heun's correction) gets step i + 1's, the condition of
that noise level. The samplers stay pure functions: they pass `cond` through, and the denoiser resolves it at the
sigma it is asked at (`resolve`, called by the guidance wrapper and `Denoiser`).

Rows of different lengths never share a forward pass: `run_by_length` runs a network once per length group, so a
prompt's image never depends on the lengths of its neighbours' prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["GridConditions", "StepConditions", "TextCond", "cat_conds", "on_grid", "repeat_rows", "resolve",
           "run_by_length", "zeros_like_cond"]

_RTOL = 1e-6  # relative tolerance of "sigma is this grid level"


@dataclass(frozen=True)
class TextCond:
    """A batch of text conditions (module docstring); indexing, `to`, `cat` and `len` act on rows."""

    context: Tensor                 # (B, L, D)
    pooled: Tensor | None = None    # (B, P)
    time_ids: Tensor | None = None  # (B, T)
    lengths: Tensor | None = None   # (B,) int64; None = every row uses all L tokens

    def __len__(self) -> int:
        return self.context.shape[0]

    def __getitem__(self, index: Any) -> TextCond:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return TextCond(self.context[index], pick(self.pooled), pick(self.time_ids), pick(self.lengths))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextCond:
        """Every tensor on `device`; floating tensors in `dtype` when given."""
        def move(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)

        return TextCond(move(self.context), move(self.pooled), move(self.time_ids), move(self.lengths))

    @property
    def device(self) -> torch.device:
        return self.context.device

    def row_lengths(self) -> Tensor:
        """(B,) the number of context tokens each row uses."""
        if self.lengths is not None:
            return self.lengths
        return torch.full((len(self),), self.context.shape[1], dtype=torch.long, device=self.context.device)

    def trimmed(self) -> TextCond:
        """Rows of one length with the padding cut off (`lengths` dropped); an error for rows of several lengths."""
        lengths = self.row_lengths().unique()
        if len(lengths) != 1:
            raise ValueError(f"rows of context lengths {lengths.tolist()} cannot share a forward pass")
        return TextCond(self.context[:, : int(lengths[0])], self.pooled, self.time_ids)

    def expand(self, n: int) -> TextCond:
        """One row repeated to n rows (views)."""
        grow = lambda t: None if t is None else t.expand(n, *t.shape[1:])  # noqa: E731
        return TextCond(grow(self.context), grow(self.pooled), grow(self.time_ids), grow(self.lengths))

    @staticmethod
    def cat(items: Sequence[TextCond | Tensor]) -> TextCond:
        """Rows of several batches; contexts of different lengths zero-padded to the longest (with `lengths`)."""
        conds = [c if isinstance(c, TextCond) else TextCond(c) for c in items]
        longest = max(c.context.shape[1] for c in conds)
        ragged = any(c.lengths is not None or c.context.shape[1] != longest for c in conds)
        contexts = [torch.nn.functional.pad(c.context, (0, 0, 0, longest - c.context.shape[1])) for c in conds]

        def join(name: str) -> Tensor | None:
            parts = [getattr(c, name) for c in conds]
            if all(p is None for p in parts):
                return None
            if any(p is None for p in parts):
                raise ValueError(f"cannot join text conditions with and without `{name}`")
            return torch.cat(parts)

        lengths = torch.cat([c.row_lengths() for c in conds]) if ragged else None
        return TextCond(torch.cat(contexts), join("pooled"), join("time_ids"), lengths)


def cat_conds(conds: Sequence[Any]) -> Any:
    """The rows of several conditions of one kind: `torch.cat` for tensors of one shape, else `TextCond.cat`."""
    if all(isinstance(c, Tensor) for c in conds) and len({tuple(c.shape[1:]) for c in conds}) == 1:
        return torch.cat(list(conds))
    return TextCond.cat(conds)


def repeat_rows(cond: Any, n: int) -> Any:
    """A one-row condition repeated to n rows (a condition of n rows as it is)."""
    if len(cond) == n:
        return cond
    if len(cond) != 1:
        raise ValueError(f"a condition of {len(cond)} rows for a batch of {n}")
    return cond.expand(n, *cond.shape[1:]) if isinstance(cond, Tensor) else cond.expand(n)


def zeros_like_cond(cond: Any) -> Any:
    """The all-zero condition of `cond`'s shape (SDXL's null prompt, `force_zeros_for_empty_prompt`); time ids kept."""
    if isinstance(cond, Tensor):
        return torch.zeros_like(cond)
    zero = lambda t: None if t is None else torch.zeros_like(t)  # noqa: E731
    return replace(cond, context=zero(cond.context), pooled=zero(cond.pooled))


class StepConditions:
    """Conditions that depend on the sampler step (module docstring): `on_grid(sigmas)` binds them to a grid."""

    def on_grid(self, sigmas: Tensor) -> GridConditions:
        """The conditions of each step of the grid `sigmas` ([N + 1], descending, the sampler's grid)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class GridConditions:
    """Row b uses table[index[b, i]] in step i of the grid `sigmas` (module docstring)."""

    table: Any       # (M, ...) a Tensor or TextCond of the distinct conditions
    index: Tensor    # (B, N) int64
    sigmas: Tensor   # (N + 1,) float64

    def __len__(self) -> int:
        return self.index.shape[0]

    def __getitem__(self, rows: Any) -> GridConditions:
        return GridConditions(self.table, self.index[rows], self.sigmas)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GridConditions:
        return GridConditions(self.table.to(device=device, dtype=dtype), self.index.to(device), self.sigmas)

    def steps(self, sigma: Tensor) -> Tensor:
        """(B,) the step i(sigma) of each row's noise level (module docstring)."""
        levels = self.sigmas[1:-1].to(torch.float64)  # (N - 1,)
        s = sigma.detach().to("cpu", torch.float64).reshape(-1, 1)  # (B, 1)
        return (levels >= s * (1 - _RTOL)).sum(dim=1)  # (B,)

    def at(self, sigma: Tensor) -> Any:
        """The condition of every row at noise level sigma ([B], or [1] for every row)."""
        i = self.steps(sigma).to(self.index.device).expand(len(self))  # one level for every row, or one per row
        chosen = self.index.gather(1, i[:, None])[:, 0]  # (B,)
        return self.table[chosen.to(_device(self.table))]


def _device(cond: Any) -> torch.device:
    return cond.device if isinstance(cond, (Tensor, TextCond)) else torch.device("cpu")


def on_grid(obj: Any, sigmas: Tensor) -> Any:
    """`obj` bound to the sampler's grid when it depends on the step (`StepConditions`, a guided denoiser holding
    one); anything else as it is."""
    bind = getattr(obj, "on_grid", None)
    return bind(sigmas) if callable(bind) else obj


def resolve(cond: Any, sigma: Tensor) -> Any:
    """The condition at noise level sigma [B]: `GridConditions.at`; a tensor or `TextCond` as it is."""
    if isinstance(cond, GridConditions):
        return cond.at(sigma)
    if isinstance(cond, StepConditions):
        raise ValueError("step-dependent conditions (prompt editing, alternation) must be bound to the sampler's "
                         "grid first: difflab.samplers.generate does it (diffusion.conditioning.on_grid)")
    return cond


def run_by_length(net: Callable[..., Tensor], x: Tensor, c_noise: Tensor, cond: Any) -> Tensor:
    """net(x, c_noise, cond), once per group of rows whose contexts have one length; a `TextCond` with only a
    context reaches the network as its context tensor [B, L, D]."""
    if not isinstance(cond, TextCond):
        return net(x, c_noise, cond)
    lengths = cond.row_lengths()
    distinct = lengths.unique()
    if len(distinct) == 1:
        return net(x, c_noise, _plain(cond.trimmed()))
    out: Tensor | None = None
    for length in distinct.tolist():
        rows = (lengths == length).nonzero()[:, 0]  # (b,)
        part = net(x[rows], c_noise[rows], _plain(cond[rows].trimmed()))
        if out is None:
            out = part.new_empty((x.shape[0], *part.shape[1:]))
        out[rows] = part
    assert out is not None
    return out


def _plain(cond: TextCond) -> TextCond | Tensor:
    return cond.context if cond.pooled is None and cond.time_ids is None else cond
