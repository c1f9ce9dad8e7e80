"""Metric plumbing with tiny random networks: sharding, gathering, FID/KID/IS maths, caching, skipping."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from difflab.evaluation import MetricSuite, MetricsConfig
from difflab.metrics import FeatureStore, MetricWeightsError, ReferenceStats, fidelity_scores, reference_cache_path, resolve_weights, to_uint8_rgb
from difflab.utils.cluster import shard
from difflab.utils.weights import INCEPTION
from fakes import TinyExtractor, tiny_clip, tiny_networks


@pytest.mark.parametrize("n", [0, 1, 7, 10, 129])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_disjointly_with_even_starts(n: int, world: int) -> None:
    parts = [shard(n, r, world) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
    assert all(p.start % 2 == 0 for p in parts if len(p))


def test_to_uint8_rgb_rounds_like_png_export_and_repeats_grey() -> None:
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 2.0]).reshape(1, 1, 1, 6)
    out = to_uint8_rgb(x)
    assert out.shape == (1, 3, 1, 6) and out.dtype == torch.uint8
    assert out[0, 0, 0].tolist() == [0, 0, 128, 191, 255, 255]  # 127.5 rounds half to even -> 128
    assert torch.equal(out[:, 0], out[:, 2])


def test_feature_store_orders_by_index_and_refuses_duplicates() -> None:
    store = FeatureStore(TinyExtractor())
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    store.update(images[3:], torch.arange(3, 6))
    store.update(images[:3], torch.arange(0, 3))
    features, logits = store.compute()
    ref, ref_logits = TinyExtractor()(images)
    torch.testing.assert_close(features, ref)
    torch.testing.assert_close(logits, ref_logits)
    store.update(images[:1], torch.tensor([0]))
    with pytest.raises(ValueError, match="twice"):
        store.compute()
    store.reset()
    with pytest.raises(ValueError, match="no images"):
        store.compute()


def _gaussian_features(n: int, mean: float, scale: np.ndarray, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(mean + rng.standard_normal((n, len(scale))) * scale).float()


def test_fid_matches_the_frechet_distance_computed_with_scipy_sqrtm() -> None:
    """Oracle: d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with scipy's matrix square root."""
    scale = np.linspace(0.5, 2.0, 8)
    gen, real = _gaussian_features(4000, 0.3, scale, 0), _gaussian_features(5000, 0.0, scale[::-1], 1)
    ref = ReferenceStats.from_features(real, {})
    fid = fidelity_scores(gen, torch.zeros(4000, 3), ref, kid=False, inception_score=False)["fid"]
    g, r = gen.double().numpy(), real.double().numpy()
    s1, s2 = np.cov(g, rowvar=False), np.cov(r, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((g.mean(0) - r.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert fid == pytest.approx(expected, rel=1e-5)
    # and the population value of the two Gaussians, up to sampling error
    population = 8 * 0.3**2 + np.sum((scale - scale[::-1]) ** 2)
    assert fid == pytest.approx(population, rel=0.1)
    assert fidelity_scores(real, torch.zeros(5000, 3), ref, kid=False, inception_score=False)["fid"] == pytest.approx(0, abs=1e-3)


def test_kid_is_zero_on_average_for_the_same_distribution_and_positive_for_different_ones() -> None:
    scale = np.ones(8)
    a, b = _gaussian_features(600, 0.0, scale, 0), _gaussian_features(600, 0.0, scale, 1)
    c = _gaussian_features(600, 1.0, scale, 2)
    ref = ReferenceStats.from_features(a, {})
    same = fidelity_scores(b, torch.zeros(600, 3), ref, fid=False, inception_score=False, kid_subset_size=200)
    diff = fidelity_scores(c, torch.zeros(600, 3), ref, fid=False, inception_score=False, kid_subset_size=200)
    assert abs(same["kid"]) < 3 * same["kid_std"] + 1e-3
    assert diff["kid"] > 10 * max(same["kid_std"], 1e-3)
    capped = fidelity_scores(c[:50], torch.zeros(50, 3), ref, fid=False, inception_score=False)
    assert capped["kid_subset_size_used"] == 50


def test_inception_score_is_the_number_of_equally_likely_confident_classes() -> None:
    """Oracle: one-hot-confident predictions spread evenly over k classes give IS = k exactly."""
    k, n = 5, 1000
    logits = torch.full((n, 10), -40.0)  # p = e^-40 elsewhere: confident, yet no 0 * log 0
    logits[torch.arange(n), torch.arange(n) % k] = 0.0
    out = fidelity_scores(torch.zeros(n, 4), logits, None, fid=False, kid=False, isc_splits=1)
    assert out["is"] == pytest.approx(k, rel=1e-6)
    uniform = fidelity_scores(torch.zeros(n, 4), torch.zeros(n, 10), None, fid=False, kid=False)
    assert uniform["is"] == pytest.approx(1.0)


def test_reference_cache_name_carries_the_protocol_and_stale_files_are_refused(tmp_path: Path) -> None:
    meta = {"dataset": "digits", "split": "train", "resolution": 16, "count": 64, "weights_hash": "abc123"}
    path = reference_cache_path(tmp_path, meta)
    assert path.name == "digits-train-16px-n64-inception-abc123.pt"
    ref = ReferenceStats.from_features(torch.randn(64, 4), meta)
    ref.save(path)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = ReferenceStats.load(path, meta)
    np.testing.assert_array_equal(loaded.sigma, ref.sigma)
    with pytest.raises(ValueError, match="do not match"):
        ReferenceStats.load(path, {**meta, "weights_hash": "other"})


def _config(tmp_path: Path, **kw) -> MetricsConfig:  # noqa: ANN003
    base = dict(n_samples=12, batch_size=5, reference={"split": "train", "n": 40}, kid_subset_size=10,
                isc_splits=2, feature_batch_size=7, cache_dir=str(tmp_path / "stats"), clip_score=False)
    return MetricsConfig(**{**base, **kw})


def test_suite_reference_cache_gives_the_same_values_as_recomputing(tmp_path: Path) -> None:
    from difflab.data import DigitsDataModule

    dm = DigitsDataModule(batch_size=8)
    images = torch.rand(12, 1, 16, 16) * 2 - 1
    results = []
    for _ in range(2):  # first pass computes and caches, second reads the cache
        suite = MetricSuite(_config(tmp_path), networks=tiny_networks())
        suite.prepare_reference(dm)
        suite.update(images, torch.arange(12))
        results.append(suite.compute())
        assert suite.compute() == results[-1]  # compute does not consume the state
    assert len(list((tmp_path / "stats").glob("digits-train-16px-n40-inception-tiny0000.pt"))) == 1
    assert results[0] == results[1]
    assert set(results[0]) >= {"fid", "kid", "kid_std", "is", "is_std", "lpips_diversity"}
    assert results[0]["fid"] > 0 and results[0]["lpips_diversity"] > 0
    suite.reset()
    suite.update(images[:4].repeat_interleave(2, 0), torch.arange(8))  # pairs of identical images
    assert suite.compute()["lpips_diversity"] == 0.0


def test_missing_weights_skip_with_one_warning_or_raise_naming_file_and_key(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    missing = str(tmp_path / "nope.pth")
    cfg = _config(tmp_path, weights={"inception": missing, "lpips_alexnet": missing})
    with caplog.at_level(logging.WARNING):
        suite = MetricSuite(cfg)
    assert suite.active == ["broken_rate"]  # needs no weights
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "metrics skipped" in r.getMessage()]
    assert len(warnings) == 1 and "metrics.weights.inception" in warnings[0].getMessage()
    with pytest.raises(MetricWeightsError, match=r"nope\.pth.*metrics\.weights\.inception"):
        MetricSuite(cfg, strict=True)


def test_resolving_from_an_empty_cache_offline_names_the_cache_file_and_the_key(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MetricWeightsError) as err:
        resolve_weights(INCEPTION, None, download=False)
    assert INCEPTION.filename in str(err.value) and "metrics.weights.inception" in str(err.value)
    cached = tmp_path / "hub" / "checkpoints" / INCEPTION.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights(INCEPTION, None, download=False) == cached


def test_lpips_pairs_follow_sample_indices_whatever_the_batching() -> None:
    from difflab.metrics import LPIPSDiversity
    from fakes import tiny_lpips

    images = torch.rand(9, 1, 8, 8) * 2 - 1
    whole = LPIPSDiversity(tiny_lpips()[0])
    whole.update(images, torch.arange(9))
    pieces = LPIPSDiversity(tiny_lpips()[0])
    for chunk in (range(0, 3), range(3, 4), range(4, 9)):
        pieces.update(images[chunk.start : chunk.stop], torch.arange(chunk.start, chunk.stop))
    assert int(whole.count) == int(pieces.count) == 4
    assert float(pieces.compute()) == pytest.approx(float(whole.compute()), rel=1e-6)
    prep = LPIPSDiversity._prepare(images)  # 8-bit rounding, upsampling to LPIPS' minimum size
    expected = np.mean([((prep[2 * k] - prep[2 * k + 1]) ** 2).mean().item() for k in range(4)])
    assert float(whole.compute()) == pytest.approx(expected, rel=1e-6)




_tiny_clip = tiny_clip  # the shared tiny CLIP (tests/fakes.py)


def test_clip_score_of_a_tiny_random_clip_equals_the_cosine_formula(tmp_path: Path) -> None:
    from difflab.evaluation import Networks
    from difflab.conditions import ClassLabel

    model, processor = _tiny_clip()
    suite = MetricSuite(_config(tmp_path, clip_score=True, fid=False, kid=False, inception_score=False,
                                lpips_diversity=False, condition_accuracy=False), checks=ClassLabel(3).checks,
                        networks=Networks(clip=lambda: (model, processor)))
    assert suite.active == ["clip_score", "broken_rate"]

    class Data:
        class_names = ["zero", "one", "two"]

    images = torch.rand(6, 3, 24, 24) * 2 - 1
    requests = ClassLabel(3).draw(6, Data())
    labels, prompts = requests.labels, requests.texts
    assert labels.tolist() == [0, 1, 2, 0, 1, 2] and prompts[4] == "a photo of a one"
    suite.update(images, torch.arange(6), prompts)
    score = suite.compute()["clip_score"]

    with torch.no_grad():
        pixel = processor(images=list(to_uint8_rgb(images)), return_tensors="pt")["pixel_values"]
        tokens = processor(text=prompts, return_tensors="pt", padding=True)
        img = model.get_image_features(pixel_values=pixel)
        txt = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    assert score == pytest.approx(max(100 * cos.mean().item(), 0.0), abs=1e-3)
    assert MetricSuite(_config(tmp_path), networks=tiny_networks()).clip is None


def test_condition_accuracy_classifier_learns_digits_is_cached_and_scores_requested_labels(tmp_path: Path) -> None:
    from difflab.data import DigitsDataModule
    from difflab.evaluation.classifier import load_or_train_classifier
    from difflab.metrics.conditions import ConditionAccuracy

    dm = DigitsDataModule(batch_size=8)
    model, acc, path = load_or_train_classifier(dm, tmp_path, epochs=5)
    assert acc > 0.9 and path.is_file()
    again, acc_again, _ = load_or_train_classifier(dm, tmp_path, epochs=5)  # from the cache
    assert acc_again == acc
    (batch, _), = list(dm.iter_batches("val", 0, 180, 180))
    right, wrong = ConditionAccuracy(again), ConditionAccuracy(again)
    right.update(batch["image"], batch["label"])
    wrong.update(batch["image"], (batch["label"] + 1) % 10)
    assert float(right.compute()) == pytest.approx(acc, abs=0.02)  # the real images score the classifier's accuracy
    assert float(wrong.compute()) < 0.1
