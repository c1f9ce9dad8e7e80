"""The fast paths, each against the plain path on the CPU: channels_last and compiled training give the same losses,
sampling runs in inference mode with the network in the sampling dtype and memory format (the same images, the
module's own weights untouched), no sampler step reads a device tensor on the host, and `trainer.precision`'s
default picks bf16 autocast, fp16 with a scaler or float32 by what the GPU offers."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from difflab.diffusion import DiffusionLoss, DiscreteVPScheduler
from difflab.errors import ConfigError
from difflab.lit import DiffusionModule
from difflab.lit.inference import channels_last_on, is_channels_last
from difflab.nets import UNet
from difflab.nets.unet import AttentionBlock
from difflab.samplers import SamplerSpec
from difflab.samplers.base import SAMPLERS
from difflab.utils import config
from oracles import SCHED, mixture_denoiser

HOST_DRIVEN = {"ode": "scipy's RK45 steps on the host", "dpm_adaptive": "its step-size control reads the error"}


def tiny_module(**kwargs: object) -> DiffusionModule:
    """A seeded tiny UNet module whose zero-initialised layers are given small random weights (a non-trivial F)."""
    torch.manual_seed(0)
    net = UNet(in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
               resolution=8, num_heads=2, norm_groups=4)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return DiffusionModule(net, DiscreteVPScheduler(), DiffusionLoss(), partial(torch.optim.AdamW, lr=1e-2),
                           image_shape=(3, 8, 8), sampler=SamplerSpec("dpmpp_2m", steps=4), **kwargs)


class Losses(L.Callback):
    """The training loss of every step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: dict, *args: object) -> None:
        self.values.append(float(outputs["loss"]))


def train_losses(module: DiffusionModule, steps: int = 3) -> list[float]:
    """Losses of `steps` CPU training steps on fixed random images."""
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    data = DataLoader([{"image": x} for x in images], batch_size=4)
    losses = Losses()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[losses])
    trainer.fit(module, data)
    return losses.values


def test_channels_last_training_gives_the_same_losses() -> None:
    plain = train_losses(tiny_module(channels_last=False))
    auto = tiny_module()  # auto: channels_last on the CPU
    fast = train_losses(auto)
    assert auto._train_channels_last and is_channels_last(auto.net)
    assert len(fast) == 3 and fast == pytest.approx(plain, rel=1e-4), (fast, plain)


def test_channels_last_auto_means_the_cpu_only() -> None:
    assert channels_last_on("auto", "cpu") and not channels_last_on("auto", "cuda")
    assert channels_last_on(True, "cuda") and not channels_last_on(False, "cpu")


@pytest.mark.parametrize("key, value", [("channels_last", "maybe"), ("compile", "yes"), ("compile_sampling", 1)])
def test_switches_refuse_values_that_are_not_settings(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"model.{key}"):
        tiny_module(**{key: value})


@pytest.mark.slow
def test_compiled_training_gives_the_same_losses() -> None:
    plain = train_losses(tiny_module(channels_last=False))
    compiled = train_losses(tiny_module(channels_last=False, compile=True))
    assert compiled == pytest.approx(plain, rel=1e-4, abs=1e-6), (compiled, plain)


def test_attention_runs_through_sdpa_and_equals_the_explicit_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    net = tiny_module().net.eval()
    x, c_noise = torch.randn(2, 3, 8, 8), torch.rand(2) * 999
    fast = net(x, c_noise)
    calls = []

    def explicit(q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # softmax(Q K^T / sqrt(d)) V (Vaswani et al. eq. 1)
        calls.append(q.shape)
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", explicit)
    slow = net(x, c_noise)
    assert len(calls) == sum(isinstance(m, AttentionBlock) for m in net.modules()) > 0
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


class Recorder(nn.Module):
    """Wraps a network and records in `Recorder.calls` (shared by its copies), at each call, inference mode,
    autocast, the input and weight dtypes and the input's memory format."""

    calls: list[dict] = []

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        Recorder.calls = []

    def forward(self, x: Tensor, c_noise: Tensor, cond: object = None) -> Tensor:
        weight = next(self.net.parameters())
        self.calls.append({"inference": torch.is_inference_mode_enabled(), "autocast": torch.is_autocast_enabled("cpu"),
                           "x": x.dtype, "weight": weight.dtype, "channels_last": x.is_contiguous(memory_format=torch.channels_last)})
        return self.net(x, c_noise, cond)


def test_sampling_runs_in_inference_mode_and_returns_ordinary_tensors() -> None:
    module = tiny_module()
    module.denoiser.net = Recorder(module.net)
    images, nfe = module.generate(3, seed=5)
    assert nfe == 4 and len(Recorder.calls) == 4
    assert all(c["inference"] and c["x"] == torch.float32 and c["channels_last"] for c in Recorder.calls)
    assert not images.is_inference() and not images.requires_grad
    images.mul_(0.5)  # callers may change the images in place


def test_channels_last_sampling_gives_the_same_images() -> None:
    plain, _ = tiny_module(channels_last=False).generate(4, seed=3)
    module = tiny_module()
    fast, _ = module.generate(4, seed=3)
    assert is_channels_last(module.net)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_bf16_sampling_runs_the_network_in_bf16_and_leaves_the_weights() -> None:
    module = tiny_module()
    reference, _ = module.generate(4, seed=2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.denoiser.net = Recorder(module.net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images, _ = module.generate(4, seed=2)
    calls = Recorder.calls
    assert calls and all(c["x"] == c["weight"] == torch.bfloat16 and not c["autocast"] for c in calls)
    module.denoiser.net = module.net.net
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in module.state_dict().items())
    assert images.dtype == torch.float32
    error = (images - reference).abs()
    assert 0 < error.mean() < 0.01 and error.max() < 0.1, (error.mean(), error.max())  # bf16's rounding, no more


@pytest.mark.slow
def test_compiled_sampling_gives_the_same_images() -> None:
    plain, _ = tiny_module().generate(4, seed=1)
    module = tiny_module(compile_sampling=True)
    first, _ = module.generate(4, seed=1)
    call = module._sampling_calls.call
    again, _ = module.generate(4, seed=1)
    assert module._sampling_calls.call is call  # kept between calls: compiled once
    torch.testing.assert_close(first, plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


# Host reads: a tensor that stands for data on the GPU; reading it on the host would wait for the GPU.
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__bool__,
              torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.nonzero,
              torch.nonzero, torch.equal, torch.allclose, torch.Tensor.equal, torch.Tensor.allclose, torch.masked_select,
              torch.Tensor.masked_select, torch.unique, torch.Tensor.unique}


class OnDevice(torch.Tensor):
    """A tensor that stands for data on an accelerator: its host reads, and the network calls, go to `log`."""

    log: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 (torch's protocol)
        if func in HOST_READS:
            cls.log.append(f"read {func.__name__}")
        return super().__torch_function__(func, types, args, kwargs or {})


def watched(denoise_fn):  # noqa: ANN001, ANN201
    """`denoise_fn` whose outputs are `OnDevice` tensors, each call logged."""

    def fn(x: Tensor, sigma: Tensor, cond: object = None) -> Tensor:
        OnDevice.log.append("call")
        return denoise_fn(x.as_subclass(Tensor), sigma, cond).as_subclass(OnDevice)

    return fn


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - set(HOST_DRIVEN)))
def test_no_sampler_step_reads_a_device_tensor_on_the_host(name: str) -> None:
    OnDevice.log = []
    sigmas = SCHED.inference_sigmas(6)
    x = (torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])).as_subclass(OnDevice)
    out = SAMPLERS[name].fn(watched(mixture_denoiser), x, sigmas, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, OnDevice) and OnDevice.log.count("call") >= 6
    assert not [e for e in OnDevice.log if e != "call"], OnDevice.log


def test_no_host_read_between_the_network_calls_of_generate() -> None:
    module = tiny_module()
    net = module.net

    class Watched(nn.Module):
        def forward(self, x: Tensor, c_noise: Tensor, cond: object = None) -> Tensor:
            OnDevice.log.append("call")
            return net(x.as_subclass(Tensor), c_noise, cond).as_subclass(OnDevice)

    OnDevice.log = []
    module.denoiser.net = Watched()
    module.generate(6, seed=0, batch_size=3)
    calls = [i for i, e in enumerate(OnDevice.log) if e == "call"]
    assert len(calls) == 8  # two batches of four steps
    for batch in (OnDevice.log[calls[0] : calls[3]], OnDevice.log[calls[4] : calls[7]]):
        assert set(batch) == {"call"}, OnDevice.log


@pytest.mark.parametrize("cuda, bf16, expected", [(False, False, "32-true"), (True, True, "bf16-mixed"),
                                                  (True, False, "16-mixed")])
def test_default_precision_follows_the_gpu(monkeypatch: pytest.MonkeyPatch, cuda: bool, bf16: bool,
                                           expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16 and not including_emulation)
    assert config.auto_precision() == expected
    assert config.fused_adamw(expected) == (expected == "32-true")  # fused AdamW off under Lightning's gradient scaling
