"""Continuous-vector conditioning: the embedding and its null vector, the regressor metric, train -> sample -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_NET, compose_config
from difflab.conditions import ClassLabel, Vector
from difflab.nets import VectorEmbedding


def test_null_condition_is_nan_for_vectors_and_minus_one_for_labels() -> None:
    assert torch.equal(ClassLabel(10).null(torch.tensor([3, 4])), torch.tensor([-1, -1]))
    assert Vector().null(torch.zeros(2, 8)).isnan().all()


def test_vector_embedding_features_null_rows_and_shapes() -> None:
    torch.manual_seed(0)
    emb = VectorEmbedding(dim=3, emb_dim=16, num_frequencies=4, min_frequency=1.0, max_frequency=8.0)
    torch.testing.assert_close(emb.freqs[0], torch.tensor([1.0, 2.0, 4.0, 8.0]))  # geometric, shared by the scalars
    with torch.no_grad():
        emb.null.normal_()
    v = torch.tensor([[0.1, -0.5, 2.0], [float("nan")] * 3, [0.1, -0.5, 2.1]])
    out = emb(v)
    assert out.shape == (3, 16) and torch.equal(out[1], emb.null.detach())  # a NaN row is the learned null vector
    assert not torch.allclose(out[0], out[2]) and torch.isfinite(out).all()
    # the features of scalar j are [v_j, cos(f_k v_j), sin(f_k v_j)], concatenated over j before the MLP
    args = v[0, :, None] * emb.freqs
    features = torch.cat([v[0, :, None], args.cos(), args.sin()], dim=-1).flatten()
    torch.testing.assert_close(out[0], emb.mlp(features))
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        emb(torch.zeros(2, 4))
    learned = VectorEmbedding(dim=3, emb_dim=16, learned_frequencies=True)
    assert "freqs" in dict(learned.named_parameters()) and "freqs" not in dict(emb.named_parameters())


def test_vector_model_drops_to_the_null_vector_in_training_only(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_config("train", ["model=cond_vector", "data=shapes", "data.resolution=16", *TINY_NET,
                                   "model.net.emb_channels=32", "model.condition.drop_prob=0.5"], tmp_path)
    module = instantiate(cfg.model)
    batch = {"image": torch.zeros(2000, 3, 16, 16), "cond": torch.randn(2000, 8)}
    module.train()
    _, cond = module._inputs(batch)
    dropped = cond.isnan().all(1)
    assert dropped.double().mean().item() == pytest.approx(0.5, abs=0.04) and not cond[~dropped].isnan().any()
    assert torch.equal(cond[~dropped], batch["cond"][~dropped])
    module.eval()
    assert torch.equal(module._inputs(batch)[1], batch["cond"])


@pytest.fixture(scope="module")
def shapes_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One metric cache (the regressor is trained once) for the tests of this file."""
    return tmp_path_factory.mktemp("metric_cache")


SHAPES = ["data=shapes", "data.resolution=16", "data.num_samples=600"]


def test_regressor_is_cached_and_scores_requested_vectors(shapes_cache: Path) -> None:
    from difflab.data import ShapesDataModule
    from difflab.evaluation.classifier import load_or_train_classifier
    from difflab.metrics.conditions import ConditionMAE

    dm = ShapesDataModule(resolution=16, num_samples=600)
    model, mae_std, path = load_or_train_classifier(dm, shapes_cache, target="cond")
    assert path.is_file() and "regressor" in path.name and mae_std < 0.4  # a requested-vs-random MAE is ~1.15 std
    again, mae_again, _ = load_or_train_classifier(dm, shapes_cache, target="cond")  # from the cache
    assert mae_again == mae_std
    (batch, _), = list(dm.iter_batches("val", 0, 60, 60))
    right, wrong = ConditionMAE(again, dm.cond_stats), ConditionMAE(again, dm.cond_stats)
    right.update(batch["image"], batch["cond"])
    wrong.update(batch["image"], batch["cond"].roll(1, 0))
    ok, bad = right.compute(), wrong.compute()
    assert ok["cond_mae_std"] == pytest.approx(mae_std, rel=0.25) and bad["cond_mae_std"] > 2.5 * ok["cond_mae_std"]
    # raw units: the same per-column errors times the column's std (train split), averaged
    z_err = (again(batch["image"]).detach() - dm.cond_stats.zscore(dm.cond_stats.decode(batch["cond"]))).abs()
    raw = (z_err * torch.tensor(dm.cond_stats.std)).mean()
    assert ok["cond_mae"] == pytest.approx(float(raw), rel=0.05)  # (the metric sees 8-bit images: tiny differences)


def test_vector_train_sample_evaluate_compare(tmp_path: Path, shapes_cache: Path) -> None:
    from difflab.cli import evaluate, sample, train
    from difflab.compare.table import build_table, to_markdown
    from difflab.lit.checkpoint import read_checkpoint
    from fakes import tiny_networks

    no_fid = ["metrics.fid=false", "metrics.kid=false", "metrics.inception_score=false", "metrics.lpips_diversity=false"]
    out = train.run(compose_config("train", ["model=cond_vector", *SHAPES, "debug=fast", "logger=csv", "metrics=fast",
                                             *no_fid, "metrics.n_samples=8", f"metrics.cache_dir={shapes_cache}",
                                             *TINY_NET, "model.net.emb_channels=32"], tmp_path / "t"))
    assert "val/cond_mae" in out["metrics"] and "val/cond_mae_std" in out["metrics"]
    stats = json.loads((out["run_dir"] / "cond_stats.json").read_text())
    assert stats["columns"] == ["cx", "cy", "size", "aspect", "r", "g", "b", "background"] and stats["normalize"]
    assert read_checkpoint(out["last_ckpt"])["cond_stats"] == stats
    ckpt = out["last_ckpt"]
    s = sample.run(compose_config("sample", [f"ckpt={ckpt}", "n=2", "sampler=ddim", "sampler.steps=2",
                                             "cond={cx: 0.4, cy: 0.6, size: 0.09, aspect: 1.0, r: 0.9, g: 0.6, b: 0.7, "
                                             "background: 0.1}"], tmp_path / "s"))
    record = json.loads((s["out_dir"] / "samples.json").read_text())
    assert record["cond"]["cx"] == pytest.approx(0.4) and record["cond"]["background"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"missing \['background'\]"):
        sample.run(compose_config("sample", [f"ckpt={ckpt}", "n=1", "cond={cx: 0.4, cy: 0.6, size: 0.09, aspect: 1, "
                                             "r: 0.9, g: 0.6, b: 0.7}"], tmp_path / "s2"))
    with pytest.raises(ValueError, match="Pass cond="):
        sample.run(compose_config("sample", [f"ckpt={ckpt}", "n=1"], tmp_path / "s3"))
    ev = evaluate.run(compose_config("evaluate", [f"ckpt={ckpt}", "n_samples=6", "logger=csv", "sampler=ddim",
                                                  "sampler.steps=2", "metrics=fast", *no_fid, "metrics.batch_size=4",
                                                  f"metrics.cache_dir={shapes_cache}"], tmp_path / "e"),
                      networks=tiny_networks())
    assert ev["values"]["cond_mae_std"] > 0 and ev["protocol"]["regressor_val_mae_std"] < 0.4
    assert "condition_accuracy" not in ev["values"] and "clip_score" not in ev["values"]
    row, = build_table([ev])
    assert row["cond_mae"] == ev["values"]["cond_mae"] and "cond. MAE (std)" in to_markdown([row])


BASELINE = ["data=shapes", "data.resolution=8", "data.num_samples=2000", "data.batch_size=32", "trainer=cpu",
            "trainer.max_steps=500", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false", "metrics=none",
            "logger=csv", "scheduler=edm", "sampler=euler", "sampler.steps=10", "callbacks.sample_grid.n=4",
            "callbacks.sample_grid.every_n_steps=0", "callbacks.checkpoint_last.every_n_train_steps=100000",
            "model.net.base_channels=16", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
            "model.net.attention_resolutions=[]", "model.optimizer.lr=2e-3", "model.lr_scheduler.warmup_steps=20"]


@pytest.mark.slow
def test_vector_conditioning_beats_the_unconditional_baseline_on_shapes(tmp_path: Path) -> None:
    """Same tiny net, data (8x8 shapes), scheduler and 500 steps; 128 generated shapes measured exactly against the
    requested validation vectors (std units). Any unconditional generator scores >= 0.87 per uniform attribute in
    expectation; measured here: conditional 0.91 (background 0.23, colours 0.90), unconditional 1.30 (0.91, 1.24)."""
    from difflab.cli import train
    from difflab.data import ShapesDataModule
    from difflab.data.shapes import measure_shapes
    from difflab.data.vectors import condition_rows
    from difflab.lit.checkpoint import load_module
    from difflab.samplers.generate import SamplerSpec

    dm = ShapesDataModule(resolution=8, num_samples=2000)
    dm.setup()
    rows = condition_rows(dm)[:128]
    errors = {}
    for name, model in (("cond", ["model=cond_vector", "model.net.emb_channels=32"]),
                        ("uncond", ["model=ddpm", "+model.net.emb_channels=32"])):
        out = train.run(compose_config("train", [*model, *BASELINE], tmp_path / name))
        module = load_module(out["last_ckpt"])
        images, _ = module.generate(len(rows), sampler=SamplerSpec("euler", steps=10),
                                    cond=module.condition.to_net(rows))
        errors[name] = dm.cond_stats.zscore(measure_shapes(images)).sub(dm.cond_stats.zscore(dm.cond_stats.decode(rows))).abs().mean(0)
    cond, uncond = errors["cond"], errors["uncond"]
    assert cond.mean() < 0.85 * uncond.mean(), errors
    assert cond[4:].mean() < 0.75 * uncond[4:].mean() and cond[7] < 0.5 * uncond[7], errors  # colours, background
