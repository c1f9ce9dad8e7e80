"""Tests of the ADM U-Net and its embeddings (tiny CPU configs)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from difflab.nets import ClassEmbedding, TimestepEmbedding, UNet, timestep_embedding
from difflab.nets.unet import Upsample

TINY = {
    "base_channels": 16,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (8,),
    "resolution": 16,
    "num_heads": 2,
    "norm_groups": 8,
}
WIDE = {**TINY, "channel_mult": (1, 2, 2), "attention_resolutions": (16, 8), "resolution": 32}
DEEP = {"base_channels": 32, "channel_mult": (1, 1, 2, 2), "num_res_blocks": 2,
        "attention_resolutions": (), "resolution": 32, "emb_channels": 48}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP spinning on a shared CPU costs seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Add small noise to every parameter, so zero-initialised layers stop hiding the rest."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def inputs(batch: int = 2, channels: int = 3, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, C, size, size) and c_noise (B,)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=gen), torch.rand(batch, generator=gen) * 10


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(TINY, in_channels=1), (2, 1, 16, 16)),
        (dict(TINY, in_channels=3, out_channels=6), (2, 3, 16, 16)),
        (dict(TINY, in_channels=3, head_channels=8, use_scale_shift_norm=False), (2, 3, 16, 16)),
        ({**WIDE, "in_channels": 3, "num_heads": 4}, (2, 3, 32, 32)),
        ({**DEEP, "in_channels": 1}, (1, 1, 32, 32)),
        (dict(TINY, in_channels=3, dropout=0.1), (3, 3, 16, 24)),  # non-square input
    ],
)
def test_output_shape(kwargs: dict, shape: tuple[int, ...]) -> None:
    net = UNet(**kwargs)
    out = net(torch.randn(shape), torch.rand(shape[0]))
    assert out.shape == (shape[0], net.out_channels, *shape[2:])


def test_zero_output_at_init() -> None:
    net = UNet(in_channels=3, **TINY)
    x, c_noise = inputs()
    assert torch.equal(net(x, c_noise), torch.zeros_like(x))


def test_output_depends_on_c_noise_after_training_steps() -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=1, **TINY)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, c_noise = inputs(batch=4, channels=1)
    for _ in range(3):  # the zero-initialised layers become non-zero one after another
        loss = F.mse_loss(net(x, c_noise), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        a = net(x, c_noise)
        b = net(x, c_noise + 1.0)
    assert a.abs().max() > 0
    assert not torch.allclose(a, b)


def test_gradient_checkpointing_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    import difflab.nets.unet as unet_module

    calls = []
    real_checkpoint = unet_module.checkpoint
    monkeypatch.setattr(unet_module, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    torch.manual_seed(0)
    ref = perturb_(UNet(in_channels=3, **TINY))
    ckpt = UNet(in_channels=3, **TINY, gradient_checkpointing=True)
    ckpt.load_state_dict(ref.state_dict())
    x, c_noise = inputs()
    outs, grads = [], []
    for net in (ref, ckpt):
        out = net(x, c_noise)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
    assert len(calls) == 3 + 3 + 6  # encoder res, res+attn; middle res+attn+res; decoder 2x(res+attn), 2x res
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for g_ref, g_ckpt in zip(*grads):
        torch.testing.assert_close(g_ref, g_ckpt, atol=1e-5, rtol=1e-5)
    ckpt.eval()
    with torch.no_grad():  # checkpointing is skipped outside training / without grad
        torch.testing.assert_close(ckpt(x, c_noise), outs[0], atol=1e-5, rtol=1e-5)


def test_channels_last_matches() -> None:
    torch.manual_seed(0)
    net = perturb_(UNet(in_channels=3, **TINY)).eval()
    x, c_noise = inputs()
    with torch.no_grad():
        ref = net(x, c_noise)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.to(memory_format=torch.channels_last), c_noise)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_runs_and_is_finite() -> None:
    torch.manual_seed(0)
    net = perturb_(UNet(in_channels=3, **TINY))
    x, c_noise = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, c_noise * 100)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    torch.testing.assert_close(out.float(), net(x, c_noise * 100).detach(), atol=0.1, rtol=0.1)


def test_class_conditioning_and_null_class() -> None:
    torch.manual_seed(0)
    emb = ClassEmbedding(10, emb_dim=64)
    net = perturb_(UNet(in_channels=3, **TINY, cond_embed=emb))
    assert net.conditional and not UNet(in_channels=3, **TINY).conditional
    x, c_noise = inputs()
    with torch.no_grad():
        out_a = net(x, c_noise, torch.tensor([1, 2]))
        out_b = net(x, c_noise, torch.tensor([3, 2]))
        out_null = net(x, c_noise, torch.tensor([-1, -1]))
        out_10 = net(x, c_noise, torch.tensor([emb.null_index, emb.null_index]))
    assert not torch.allclose(out_a[0], out_b[0])
    torch.testing.assert_close(out_a[1], out_b[1])  # per-sample: the other sample is untouched
    torch.testing.assert_close(out_null, out_10)


def test_class_embedding_null_index() -> None:
    emb = ClassEmbedding(10, emb_dim=8)
    assert emb.null_index == 10 and emb.embedding.num_embeddings == 11
    torch.testing.assert_close(emb(torch.tensor([-1, 3])), emb.embedding.weight[[10, 3]])
    with pytest.raises(ValueError):
        emb(torch.tensor([0.5]))


def test_timestep_embedding_values() -> None:
    c = torch.tensor([0.0, 1.0, 500.0], dtype=torch.bfloat16)
    emb = timestep_embedding(c, 7)
    assert emb.shape == (3, 7) and emb.dtype == torch.float32
    half = 3
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / half) for i in range(half)])
    args = c.float()[:, None] * freqs
    torch.testing.assert_close(emb[:, :half], torch.cos(args))  # cos half first
    torch.testing.assert_close(emb[:, half:2 * half], torch.sin(args))
    assert torch.equal(emb[:, -1], torch.zeros(3))  # odd dim: zero pad
    assert TimestepEmbedding(16, 32)(torch.rand(5)).shape == (5, 32)


def test_upsample_equals_nearest_then_conv() -> None:
    torch.manual_seed(0)
    up = Upsample(8)
    x = torch.randn(2, 8, 5, 7)
    ref = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(up(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resolution": 30, "channel_mult": (1, 2, 2)},  # 30 not divisible by 4
        {"base_channels": 18, "num_heads": 4, "attention_resolutions": (32,)},  # 18 channels, 4 heads
        {"base_channels": 16, "head_channels": 12},  # 32 channels at 16x16 not divisible by 12
        {"attention_resolutions": (12,)},  # not a feature-map size
        {"channel_mult": ()},
        {"num_res_blocks": 0},
        {"dropout": 1.0},
        {"emb_channels": 32, "cond_embed": ClassEmbedding(10, 64)},
    ],
)
def test_bad_args_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        UNet(**{"base_channels": 16, "norm_groups": 8, **kwargs})


def test_bad_inputs_raise() -> None:
    net = UNet(in_channels=3, **TINY)
    x, c_noise = inputs()
    with pytest.raises(ValueError):
        net(x[:, :1], c_noise)  # wrong channel count
    with pytest.raises(ValueError):
        net(x[..., :15], c_noise)  # width not divisible by 2
    with pytest.raises(ValueError):
        net(x, c_noise[:1])  # c_noise batch mismatch
    with pytest.raises(ValueError):
        net(x, c_noise, torch.tensor([0, 1]))  # unconditional net given a condition


def test_group_norm_groups_divide_channels() -> None:
    net = UNet(in_channels=3, base_channels=24, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(), resolution=16, norm_groups=32)
    groups = {(m.num_channels, m.num_groups) for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert (24, 24) in groups and (48, 24) in groups  # 32 does not divide 48: largest divisor below it
    assert all(c % g == 0 and g <= 32 for c, g in groups)
