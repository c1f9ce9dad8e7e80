"""The first stage of latent diffusion: KL autoencoder shapes, KL oracle, training, GAN gradients, scale factor, LPIPS loss."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from difflab.callbacks.reconstruction import psnr
from difflab.lit.autoencoder import AutoencoderModule, PerceptualLoss, lpips_loss
from difflab.lit.latent import estimate_scale_factor
from difflab.utils.weights import MetricWeightsError
from difflab.nets.autoencoder import DiagonalGaussian, KLAutoencoder, KLLatent
from difflab.nets.discriminator import PatchDiscriminator
from fakes import ASSETS

TINY = dict(base_channels=8, num_res_blocks=1, norm_groups=4)


def smooth_images(n: int = 8, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Low-frequency images in [-1, 1] (random 4x4 upsampled), easy to compress."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("channel_mult,latent_channels,in_channels", [((1,), 4, 3), ((1, 2), 3, 1), ((1, 2, 2), 4, 3), ((1, 1, 2, 2), 8, 3)])
def test_shapes_for_each_downsampling_factor(channel_mult, latent_channels, in_channels):
    net = KLAutoencoder(in_channels, latent_channels, channel_mult=channel_mult, resolution=16, attention_resolutions=[8], **TINY)
    f = 2 ** (len(channel_mult) - 1)
    x = torch.rand(2, in_channels, 16, 16) * 2 - 1
    posterior = net.encode(x)
    assert posterior.mean.shape == (2, latent_channels, 16 // f, 16 // f) and net.downsample_factor == f
    x_hat, _ = net(x)
    assert x_hat.shape == x.shape
    latent = KLLatent(net, scale_factor=0.5)
    assert latent.latent_shape((in_channels, 16, 16)) == (latent_channels, 16 // f, 16 // f)
    z = latent.encode(x, sample=False)
    torch.testing.assert_close(z, 0.5 * posterior.mean)
    assert latent.decode(z).shape == x.shape and latent.decode(z).abs().max() <= 1
    assert not any(p.requires_grad for p in latent.parameters())
    if f > 1:
        with pytest.raises(ValueError, match="not divisible"):
            latent.latent_shape((in_channels, 16, 16 + f // 2))
        with pytest.raises(ValueError, match="not divisible"):
            KLAutoencoder(in_channels, latent_channels, channel_mult=channel_mult, resolution=16 + f // 2, **TINY)


def test_kl_matches_torch_distributions():
    moments = torch.randn(3, 8, 4, 4)
    q = DiagonalGaussian(moments)
    expected = kl_divergence(Normal(q.mean, q.std), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(q.kl(), expected, rtol=1e-5, atol=1e-5)


def test_round_trip_improves_with_training():
    torch.manual_seed(0)
    x = smooth_images()
    module = AutoencoderModule(KLAutoencoder(3, 4, channel_mult=(1, 2), resolution=16, **TINY),
                               optimizer=lambda p: torch.optim.Adam(p, lr=3e-3), perceptual_weight=0.0)
    opt = module.configure_optimizers()
    error = lambda: float((module.reconstruct(x) - x).pow(2).mean())  # noqa: E731
    with torch.no_grad():
        before = error()
    for step in range(60):
        opt.zero_grad()
        module.losses(x, step)["total"].backward()
        opt.step()
    with torch.no_grad():
        after = error()
    assert after < 0.25 * before, (before, after)
    assert psnr(x, module.reconstruct(x).detach()).mean() > psnr(x, torch.zeros_like(x)).mean()


def test_gan_terms_give_each_network_its_own_gradient():
    """One backward of L_G + L_D: the discriminator gets exactly grad L_D, the decoder grad of L_G (with lambda)."""
    torch.manual_seed(0)
    x = smooth_images(4)
    disc = PatchDiscriminator(3, base_channels=8, num_layers=1)
    module = AutoencoderModule(KLAutoencoder(3, 4, channel_mult=(1, 2), resolution=16, **TINY), optimizer=torch.optim.Adam,
                               discriminator=disc, perceptual_weight=0.0, disc_start=0).train()
    torch.manual_seed(1)
    terms = module.losses(x, step=0)
    assert {"g_loss", "d_loss", "disc_weight"} <= set(terms)
    terms["total"].backward()
    got = [p.grad.clone() for p in disc.parameters()]
    # the reference: the hinge loss alone on the same (detached) reconstructions
    module.zero_grad()
    torch.manual_seed(1)
    x_hat, _ = module.net(x, sample=True)
    real, fake = disc(x), disc(x_hat.detach())
    (0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())).backward()
    for g, p in zip(got, disc.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
    assert module.losses(x, step=0)["disc_weight"] > 0
    assert "g_loss" not in AutoencoderModule(module.net, torch.optim.Adam, discriminator=disc, perceptual_weight=0.0,
                                             disc_start=10).losses(x, step=9)


class _Images:
    """The slice of the data-module API the scale-factor estimate uses."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def split_dataset(self, split: str):  # noqa: ANN201
        return self.images

    def iter_images(self, split, start, stop, batch_size):  # noqa: ANN001, ANN201
        for i in range(start, stop, batch_size):
            j = min(i + batch_size, stop)
            yield self.images[i:j], torch.arange(i, j)


def test_scale_factor_gives_unit_variance_latents():
    torch.manual_seed(0)
    latent = KLLatent(KLAutoencoder(3, 4, channel_mult=(1, 2), resolution=16, **TINY))
    assert not latent.has_scale_factor
    with pytest.raises(RuntimeError, match="scale factor"):
        latent.encode(smooth_images(1))
    images = smooth_images(64, seed=1)
    value = estimate_scale_factor(latent, _Images(images), n=64, device="cpu")
    latent.set_scale_factor(value)
    z = latent.encode(images, generator=torch.Generator().manual_seed(5))
    assert math.isclose(float(z.std()), 1.0, rel_tol=0.03), float(z.std())
    # the same posterior samples as the estimate (one batch, seeded by its first index): exactly unit variance
    z = latent.encode(images, generator=torch.Generator().manual_seed(0))
    assert math.isclose(float(z.double().std()), 1.0, rel_tol=1e-4)


def test_psnr_golden_value():
    x = torch.full((2, 3, 8, 8), -1.0)  # 8-bit 0
    one_level = torch.full_like(x, 2 / 255)  # exactly one 8-bit level away everywhere
    torch.testing.assert_close(psnr(x, x + one_level), torch.full((2,), 20 * math.log10(255), dtype=torch.float64))


def test_perceptual_loss_missing_weights_is_off_with_a_warning_or_an_error(tmp_path, caplog):
    missing = str(tmp_path / "none.pth")
    with caplog.at_level(logging.WARNING):
        assert lpips_loss(missing, download=False) is None
    assert "perceptual (LPIPS) loss OFF" in caplog.text and "model.perceptual_weight=0" in caplog.text
    with pytest.raises(MetricWeightsError, match="metrics.weights.lpips_alexnet"):
        lpips_loss(missing, download=False, required=True)
    assert lpips_loss(missing, download=False, loss_weight=0.0) is None


def test_perceptual_loss_with_the_real_alexnet():
    path = ASSETS / "lpips" / "alexnet_features_only.pth"
    if not path.is_file():
        pytest.skip(f"no LPIPS AlexNet weights at {path}")
    loss = lpips_loss(str(path), download=False, required=True)
    assert isinstance(loss, PerceptualLoss)
    x = smooth_images(2)
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    assert torch.allclose(loss(x, x), torch.zeros(2), atol=1e-6)
    d = loss(x, y)
    d.sum().backward()
    assert (d > 0).all() and y.grad.abs().sum() > 0
    module = AutoencoderModule(KLAutoencoder(3, 4, channel_mult=(1, 2), resolution=16, **TINY), torch.optim.Adam, perceptual=loss)
    assert not any(k.startswith("perceptual") or "_perceptual" in k for k in module.state_dict())  # a loss, not weights


def test_reconstruction_metrics_of_a_perfect_and_a_noisy_autoencoder(tmp_path):
    """Identity reconstructions score rFID ~ 0 against their own split, LPIPS 0 and the PSNR cap; noise scores worse."""
    from difflab.callbacks.reconstruction import ReconstructionMetrics
    from difflab.data.image_folder import ImageFolderDataModule
    from difflab.evaluation import MetricsConfig
    from fakes import fake_images, tiny_networks

    data = ImageFolderDataModule(str(fake_images(tmp_path / "images", per_class=8)), resolution=16, val_fraction=0.5,
                                 batch_size=4)
    config = MetricsConfig(n_samples=8, batch_size=4, reference={"split": "val", "n": None}, kid_subsets=2,
                           cache_dir=str(tmp_path / "stats"))

    class Identity:
        device = torch.device("cpu")

        def __init__(self, noise: float) -> None:
            self.noise = noise

        def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
            return (x + self.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)

    perfect = ReconstructionMetrics(config, networks=tiny_networks()).scores(Identity(0.0), data)
    assert perfect["rfid"] == pytest.approx(0.0, abs=1e-3) and perfect["lpips"] == 0.0 and perfect["psnr"] == 100.0
    noisy = ReconstructionMetrics(config, networks=tiny_networks()).scores(Identity(0.2), data)
    assert noisy["rfid"] > 1e-2 and noisy["lpips"] > 0 and 10 < noisy["psnr"] < 30
