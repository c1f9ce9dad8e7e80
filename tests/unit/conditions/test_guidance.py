"""Classifier-free guidance against an exact two-class Gaussian-mixture denoiser, and the conditional model."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_NET, compose_config
from difflab.conditions import ClassLabel
from difflab.diffusion import DiscreteVPScheduler
from difflab.diffusion.guidance import _rescaled, guided
from difflab.diffusion.toy import make_mixture_denoiser
from difflab.samplers import SamplerSpec, generate

MU = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
S = torch.tensor([0.5, 0.5], dtype=torch.float64)
UNCOND = make_mixture_denoiser(MU, S, torch.tensor([0.5, 0.5], dtype=torch.float64))
CLASS = [make_mixture_denoiser(MU[k : k + 1], S[k : k + 1], torch.ones(1, dtype=torch.float64)) for k in range(2)]
SCHED = DiscreteVPScheduler(grid="karras")
NULL = ClassLabel(num_classes=2).null  # label -1


class Counting:
    """The exact class-conditional denoiser (label -1 = unconditional), recording each call's batch size."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x, sigma, cond=None):  # noqa: ANN001, ANN204
        self.batches.append(x.shape[0])
        out = UNCOND(x, sigma)
        for k in range(2):
            rows = cond == k
            if rows.any():
                out[rows] = CLASS[k](x[rows], sigma[rows])
        return out


def test_guided_denoiser_is_the_formula_in_one_batched_call() -> None:
    g = torch.Generator().manual_seed(0)
    x, sigma = torch.randn(6, 2, generator=g) * 2, torch.full((6,), 0.8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    d_u, d_c = UNCOND(x, sigma), torch.stack([CLASS[int(k)](x[i : i + 1], sigma[:1])[0] for i, k in enumerate(labels)])
    for w in (0.0, 1.0, 2.5, 7.0):
        fn = Counting()
        d = guided(fn, w, null=NULL)(x, sigma, labels)
        torch.testing.assert_close(d, d_u + w * (d_c - d_u), atol=1e-5, rtol=1e-5)
        assert fn.batches == ([12] if w not in (0.0, 1.0) else [6])  # cond and null concatenated: one forward


def _sample(w: float, n: int = 1500) -> torch.Tensor:
    x, _ = generate(guided(Counting(), w, null=NULL), SCHED, SamplerSpec("heun", steps=30), n=n, shape=(2,), seed=0,
                    cond=torch.zeros(n, dtype=torch.long))
    return x.double()


def test_guidance_scale_moves_samples_from_the_mixture_to_the_class_and_beyond() -> None:
    frac0 = lambda x: (torch.cdist(x, MU).argmin(1) == 0).double().mean().item()  # noqa: E731
    uncond, cond, strong = _sample(0.0), _sample(1.0), _sample(4.0)
    assert frac0(uncond) == pytest.approx(0.5, abs=0.05)  # w = 0: the unconditional mixture
    assert frac0(cond) > 0.995  # w = 1: the class
    torch.testing.assert_close(cond.mean(0), MU[0], atol=0.06, rtol=0)
    torch.testing.assert_close(cond.std(0), S[0].expand(2), atol=0.05, rtol=0)
    assert frac0(strong) == 1.0  # w > 1: further from the other class than the class itself
    assert strong[:, 0].mean() < cond[:, 0].mean() - 0.05


def test_guidance_rescale_matches_the_conditional_eps_std() -> None:
    g = torch.Generator().manual_seed(1)
    x, sigma = torch.randn(4, 3, 8, 8, generator=g), torch.full((4,), 2.0)
    d_cond, d = torch.randn(4, 3, 8, 8, generator=g) * 0.5, torch.randn(4, 3, 8, 8, generator=g) * 1.5
    full = _rescaled(x, sigma, d, d_cond, 1.0)
    eps_full, eps_cond = (x - full) / 2.0, (x - d_cond) / 2.0
    torch.testing.assert_close(eps_full.std(dim=(1, 2, 3)), eps_cond.std(dim=(1, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_rescaled(x, sigma, d, d_cond, 0.0), d)
    with pytest.raises(ValueError, match="guidance"):
        guided(UNCOND, -1.0, null=NULL)


def test_conditional_model_drops_labels_in_training_only_and_samples_with_guidance(tmp_path) -> None:  # noqa: ANN001
    from hydra.utils import instantiate

    cfg = compose_config("train", ["model=cond", *TINY_NET, "model.net.emb_channels=32", "model.condition.drop_prob=0.5"],
                         tmp_path)
    module = instantiate(cfg.model)
    batch = {"image": torch.zeros(4000, 1, 16, 16), "label": torch.arange(4000) % 10}
    module.train()
    _, cond = module._inputs(batch)
    assert (cond == -1).double().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(cond[cond != -1], batch["label"][cond != -1])
    module.eval()
    assert torch.equal(module._inputs(batch)[1], batch["label"])
    with torch.no_grad():  # ADM zero-initialises every residual output: give the label a path to the output
        for p in module.net.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(std=0.05)
    labels = torch.tensor([3, 3])
    spec = SamplerSpec("ddim", steps=3)
    one, _ = module.generate(2, sampler=spec, cond=labels, guidance_scale=1.0)
    four, _ = module.generate(2, sampler=spec, cond=labels, guidance_scale=4.0)
    null, _ = module.generate(2, sampler=spec, cond=torch.full((2,), -1), guidance_scale=1.0)
    zero, _ = module.generate(2, sampler=spec, cond=labels, guidance_scale=0.0)
    torch.testing.assert_close(zero, null)  # w = 0 is the null-class (unconditional) model
    assert not torch.allclose(one, four)


def test_class_conditional_train_sample_and_evaluate_with_guidance(tmp_path) -> None:  # noqa: ANN001
    import json

    from difflab.cli import evaluate, sample, train
    from fakes import tiny_networks

    out = train.run(compose_config("train", ["model=cond", "debug=fast", "logger=csv", "metrics=none", *TINY_NET,
                                             "model.net.emb_channels=32"], tmp_path / "t"))
    ckpt = out["last_ckpt"]
    s = sample.run(compose_config("sample", [f"ckpt={ckpt}", "class_label=3", "guidance_scale=4", "n=4",
                                             "sampler=ddim", "sampler.steps=2"], tmp_path / "s"))
    assert json.loads((s["out_dir"] / "samples.json").read_text())["guidance_scale"] == 4
    record = evaluate.run(compose_config("evaluate", [f"ckpt={ckpt}", "guidance_scale=2", "n_samples=6", "logger=csv",
                                                      "sampler=ddim", "sampler.steps=2", "metrics=fast",
                                                      "metrics.clip_score=false", "metrics.batch_size=4",
                                                      "metrics.reference.n=16", "metrics.kid_subset_size=4"],
                                          tmp_path / "e"), networks=tiny_networks())
    assert record["sampler"]["guidance_scale"] == 2.0 and record["values"]["fid"] > 0
    assert 0.0 <= record["values"]["condition_accuracy"] <= 1.0  # an untrained model: near chance
    assert record["protocol"]["classifier_val_accuracy"] > 0.9
