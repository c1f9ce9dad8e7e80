"""Reference implementations the sampler tests compare with: diffusers' scheduler loops and k-diffusion's samplers.

k-diffusion (the `dev` extra, installed with --no-deps: pyproject.toml says why) imports its training stack
(clean-fid, CLIP, kornia, scikit-image, ...) from its package `__init__`. Its `sampling.py` needs only torch, scipy,
torchdiffeq, torchsde, tqdm and its own `utils.py`, so they are loaded here as `k_diffusion.sampling` /
`k_diffusion.external` without running the package `__init__`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from difflab.diffusion import Denoiser, DiscreteVPScheduler
from difflab.samplers import SAMPLERS
from oracles import ToyEpsNet

DIFFUSERS_BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
SHAPE = (3, 2, 4, 4)


def _load_k_diffusion() -> types.ModuleType:
    """A `k_diffusion` package holding utils, sampling and external, its `__init__` not run."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion (dev extra: pip install --no-deps k-diffusion torchdiffeq) is the reference")
    pytest.importorskip("torchdiffeq", reason="k-diffusion's sampling module imports torchdiffeq (dev extra)")
    root = Path(next(iter(spec.submodule_search_locations)))
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(root)]
    sys.modules["k_diffusion"] = package
    for name in ("utils", "sampling", "external"):
        module_spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
        setattr(package, name, module)
    return package


def k_diffusion() -> types.SimpleNamespace:
    """(sampling, external) modules of the installed k-diffusion; the test skips when it is not installed."""
    package = sys.modules.get("k_diffusion")
    if package is None or not hasattr(package, "sampling"):
        package = _load_k_diffusion()
    return types.SimpleNamespace(sampling=package.sampling, external=package.external)


def diffusers_vp_loop(ref, steps: int, seed: int, sigma_view: bool = False, states: list | None = None):
    """diffusers' loop with the toy eps-model; returns (z, x0), and every step's VP sample in `states` if given."""
    net = ToyEpsNet()
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(SHAPE, generator=g)
    x = z * ref.init_noise_sigma
    kw = {"generator": g} if "generator" in ref.step.__code__.co_varnames else {}
    for t in ref.timesteps:
        x_in = ref.scale_model_input(x, t) if sigma_view else x
        x = ref.step(net(x_in, torch.full((SHAPE[0],), float(t))), t, x, **kw).prev_sample
        if states is not None:
            states.append(x)
    return z, x


def difflab_vp_run(name: str, z: torch.Tensor, sigmas: torch.Tensor, seed: int, **knobs) -> torch.Tensor:
    """difflab's sampler `name` with the same toy eps-model, start and noise order as `diffusers_vp_loop`."""
    scheduler = DiscreteVPScheduler()
    g = torch.Generator().manual_seed(seed)
    torch.randn(SHAPE, generator=g)  # the same draw order as the diffusers loop: x_T first, then step noise
    return SAMPLERS[name](Denoiser(ToyEpsNet(), scheduler), z * scheduler.prior_std(float(sigmas[0])), sigmas,
                          generator=g, **knobs)
