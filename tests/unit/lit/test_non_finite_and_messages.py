"""Non-finite values stop with a message naming their source (a weight, an EMA weight, a batch of samples), never
black images; checkpoint messages name the key and the fix. One tiny DDPM is trained once for the module."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from conftest import TINY_NET, compose_config
from difflab.errors import ConfigError, CorruptFileError, IncompatibleCheckpointError, MissingFileError
from difflab.lit.checkpoint import load_module, read_checkpoint
from difflab.lit.diffusion import NonFiniteSamplesError, check_finite_images

WEIGHT = "denoiser.net.conv_out.weight"  # the UNet's last convolution


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from difflab.api.training import run

    root = tmp_path_factory.mktemp("tiny")
    cfg = compose_config("train", ["debug=fast", "logger=csv", "metrics=none", "trainer.enable_progress_bar=false",
                                   *TINY_NET], root)
    return Path(run(cfg)["last_ckpt"])


def _changed(ckpt: Path, tmp_path: Path, change) -> Path:
    blob = torch.load(ckpt, weights_only=True)
    change(blob)
    path = tmp_path / "changed.ckpt"
    torch.save(blob, path)
    return path


def test_the_tiny_checkpoint_has_the_weight_and_ema_this_file_damages(ckpt: Path) -> None:
    blob = torch.load(ckpt, weights_only=True)
    assert WEIGHT in blob["state_dict"] and WEIGHT in blob["ema"]["params"]
    images, _ = load_module(ckpt).generate(2, seed=0)
    assert torch.isfinite(images).all()


def test_nan_weights_name_the_parameter_and_the_fix(ckpt: Path, tmp_path: Path) -> None:
    path = _changed(ckpt, tmp_path, lambda b: b["state_dict"][WEIGHT].view(-1)[:3].fill_(float("nan")))
    with pytest.raises(CorruptFileError) as caught:
        load_module(path, use_ema=False)
    text = str(caught.value)
    assert f"Cannot read '{path}'" in text and f"3 of the {torch.load(path)['state_dict'][WEIGHT].numel()} values of the " \
           f"weight `{WEIGHT}` are NaN or infinite (config key `ckpt`)" in text
    assert "ckpt=<an earlier checkpoint of the run> or use_ema=true to load its EMA weights" in text
    assert torch.isfinite(load_module(path, use_ema=True).generate(1)[0]).all()  # the EMA weights replace it


def test_non_finite_ema_weights_name_themselves_and_use_ema_false(ckpt: Path, tmp_path: Path) -> None:
    path = _changed(ckpt, tmp_path, lambda b: b["ema"]["params"][WEIGHT].view(-1)[0].fill_(float("inf")))
    with pytest.raises(CorruptFileError, match=rf"1 of the \d+ values of the EMA weight `{WEIGHT}` .*use_ema=false"):
        load_module(path)
    load_module(path, use_ema=False)


def _flip(tensor: torch.Tensor, mask: int, count: int | None = None, to_one: bool = False) -> None:
    """Flip the `mask` bits of the first `count` float32 values (in place; `to_one`: set them), as damage would."""
    bits = tensor.view(torch.int32).view(-1)
    bits[:count] = bits[:count] | mask if to_one else bits[:count] ^ mask


def test_bit_flipped_tensors_are_caught_by_the_weights_or_by_the_batch_check(ckpt: Path, tmp_path: Path) -> None:
    exponent = 0x7F800000  # all exponent bits set: the value becomes infinite or NaN
    name = "denoiser.net.conv_in.weight"
    path = _changed(ckpt, tmp_path, lambda b: [_flip(t, exponent, 1, to_one=True) for t in (
        b["state_dict"][name], b["ema"]["params"][name], b["ema"]["params"]["denoiser.net.conv_in.bias"])])
    with pytest.raises(CorruptFileError, match=rf"1 of the \d+ values of the EMA weight `{name}` \(and 1 more tensors\)"):
        load_module(path)
    with pytest.raises(CorruptFileError, match=rf"1 of the \d+ values of the weight `{name}` are NaN"):
        load_module(path, use_ema=False)
    huge = 1 << 30  # the exponent's top bit: finite, but ~1e38 times larger
    path = _changed(ckpt, tmp_path, lambda b: _flip(b["ema"]["params"][name], huge))
    module = load_module(path)  # every weight is finite ...
    with pytest.raises(NonFiniteSamplesError, match=r"in 4 of 4 images, first in batch 0 \(images 0-1 of seed 3\)"):
        module.generate(4, seed=3, batch_size=2)  # ... and the samples are not: no black image is made


def test_the_batch_check_names_the_first_bad_batch() -> None:
    x = torch.zeros(5, 1, 2, 2)
    check_finite_images(x, 2, 10, 0, "The sampler", "fix")
    x[3, 0, 1, 1] = float("nan")
    with pytest.raises(NonFiniteSamplesError, match=r"^The sampler produced NaN or infinite values in 1 of 5 images, "
                                                    r"first in batch 1 \(images 12-13 of seed 7\); .* fix$"):
        check_finite_images(x, 2, 10, 7, "The sampler", "fix")


def test_checkpoint_messages_name_the_key_and_the_fix(ckpt: Path, tmp_path: Path) -> None:
    run_dir = ckpt.parent.parent
    with pytest.raises(MissingFileError, match=rf"`ckpt` names the folder '{run_dir}', not a checkpoint file\. Pass a "
                                               rf"file inside it, e.g\. ckpt={ckpt}"):
        read_checkpoint(run_dir)
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.ckpt")
    with pytest.raises(IncompatibleCheckpointError, match=r"plain\.ckpt' \(config key `ckpt`\) is not a difflab "
                                                          r"checkpoint: it has no state_dict and no config.*Pass ckpt="):
        read_checkpoint(tmp_path / "plain.ckpt")
    with pytest.raises(ConfigError, match=r"`scheduler\.grid`: the checkpoint's scheduler refuses "
                                          r"scheduler\.grid=karass: unknown sigma grid 'karass'"):
        load_module(ckpt, scheduler_overrides={"grid": "karass"})


@pytest.mark.parametrize("model,prefix", [("vae", "model."), ("ldm", "model.autoencoder.stage1.")])
def test_the_lpips_warning_names_a_key_that_exists_under_the_model(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                    model: str, prefix: str) -> None:
    from difflab.lit.autoencoder import lpips_loss
    from difflab.utils.config import compose

    compose("train", [f"model={model}", f"{prefix}perceptual_weight=0", f"paths.root_dir={tmp_path}"], tmp_path / "r")
    with caplog.at_level(logging.WARNING, logger="difflab.lit.autoencoder"):
        assert lpips_loss(str(tmp_path / "no_alexnet.pth"), download=False) is None
    assert f"Set {prefix}perceptual.weights=<the file> to train with it, or {prefix}perceptual_weight=0" in caplog.text
