"""Typed conditions (difflab.conditions) and the identity first stage: what each kind knows, config errors,
checkpoints written before `model.condition` (cond_key / cond_drop_prob) and pixel checkpoints still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import TINY_NET, compose_config
from difflab.conditions import ClassLabel, NoCondition, Requests, TextPrompt, Vector, legacy_condition, with_condition
from difflab.data.vectors import CondStats
from difflab.errors import ConfigError
from difflab.nets.autoencoder import IdentityFirstStage
from difflab.samplers import SamplerSpec

STATS = CondStats(["a", "b"], [1.0, -2.0], [2.0, 0.5])


def test_class_label_draws_i_mod_k_with_class_names_and_slices_by_index() -> None:
    class Data:
        class_names = ["zero", "one", "two"]

    requests = ClassLabel(3).draw(7, Data())
    assert requests.values.tolist() == [0, 1, 2, 0, 1, 2, 0] and requests.texts[4] == "a photo of a one"
    part = requests[torch.tensor([5, 6])]
    assert part.labels.tolist() == [2, 0] and part.texts == ["a photo of a two", "a photo of a zero"]
    assert ClassLabel(3).record(part) == {"class_label": [0, 2]}
    assert len(Requests()) == 0 and NoCondition().to_net(None) is None


def test_dropout_replaces_rows_by_the_null_condition_in_training_only() -> None:
    labels, vectors = torch.arange(4000) % 10, torch.randn(4000, 2)
    cond = ClassLabel(10, drop_prob=0.3).from_batch({"label": labels}, training=True)
    assert (cond == -1).double().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.equal(cond[cond != -1], labels[cond != -1])
    assert torch.equal(ClassLabel(10, drop_prob=0.3).from_batch({"label": labels}, training=False), labels)
    drop = torch.tensor([0.05, 0.5, 0.05, 0.9])  # a given uniform draw: rows 0 and 2 dropped at p = 0.1
    out = Vector(drop_prob=0.1).from_batch({"cond": vectors[:4]}, training=True, drop=drop)
    assert out[[0, 2]].isnan().all() and torch.equal(out[[1, 3]], vectors[[1, 3]])


def test_vector_parses_raw_values_records_them_and_keeps_its_statistics() -> None:
    vector = Vector()
    vector.load_state_dict({"cond_stats": STATS.to_dict()})
    requests = vector.parse({"cond": "{a: 3, b: -2}"}, 2)
    torch.testing.assert_close(requests.values, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # z-scores
    assert vector.record(requests) == {"cond": {"a": 3.0, "b": -2.0}}
    assert vector.state_dict() == {"cond_stats": STATS.to_dict()}
    for bad, key in (({"a": 1}, "`cond`"), ({"a": 1, "b": 2, "c": 3}, "unknown ['c']"), ({"a": "x", "b": 1}, "`cond.a`"),
                     ({"a": float("nan"), "b": 1}, "`cond.a`")):
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            vector.parse({"cond": bad}, 1)


def test_config_values_that_cannot_work_name_their_key() -> None:
    with pytest.raises(ConfigError, match="`model.condition.drop_prob`"):
        ClassLabel(10, drop_prob=1.0)
    with pytest.raises(ConfigError, match="`model.condition.num_classes`.*labelled data"):
        ClassLabel(None)

    class Unlabelled:
        name, num_classes, cond_stats = "faces", None, None

    with pytest.raises(ConfigError, match="data=shapes"):
        Vector().setup(Unlabelled())
    with pytest.raises(ConfigError, match="num_classes=3"):
        ClassLabel(10).setup(type("Shapes", (), {"num_classes": 3})())


def test_legacy_cond_keys_map_to_condition_objects() -> None:
    old = {"cond_key": "label", "cond_drop_prob": 0.2, "net": {"cond_embed": {"num_classes": 7}}, "guidance_scale": 1.0}
    new = with_condition(old)
    assert "cond_key" not in new and new["guidance_scale"] == 1.0
    cond = instantiate(new["condition"])
    assert isinstance(cond, ClassLabel) and cond.num_classes == 7 and cond.drop_prob == 0.2
    assert isinstance(instantiate(legacy_condition({"cond_key": "cond", "cond_drop_prob": 0.1})), Vector)
    assert isinstance(instantiate(legacy_condition({"cond_key": "caption"})), TextPrompt)
    assert isinstance(instantiate(legacy_condition({"cond_key": None})), NoCondition)
    assert with_condition({"condition": None}) == {"condition": None}  # new configs pass unchanged


@pytest.mark.parametrize("model", ["ddpm", "cond"])
def test_checkpoints_written_before_model_condition_load(model: str, tmp_path: Path) -> None:
    """A checkpoint whose stored config has the old keys (and a pixel model's state_dict: no first-stage keys)."""
    from difflab.lit.checkpoint import load_module

    extra = ["model.net.emb_channels=32"] if model == "cond" else []
    cfg = compose_config("train", [f"model={model}", *TINY_NET, *extra], tmp_path)
    module = instantiate(cfg.model)
    assert isinstance(module.autoencoder, IdentityFirstStage)
    assert not [k for k in module.state_dict() if k.startswith("autoencoder.")]  # pixel keys unchanged
    config = OmegaConf.to_container(cfg, resolve=True)
    legacy = {"cond_key": "label", "cond_drop_prob": 0.1} if model == "cond" else {"cond_key": None, "cond_drop_prob": 0.0}
    config["model"] = {**{k: v for k, v in config["model"].items() if k != "condition"}, **legacy}
    with torch.no_grad():
        next(module.net.parameters()).add_(0.5)
    torch.save({"state_dict": module.state_dict(), "config": config, "global_step": 3}, tmp_path / "old.ckpt")
    loaded = load_module(tmp_path / "old.ckpt")
    assert type(loaded.condition) is (ClassLabel if model == "cond" else NoCondition)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values()))
    x = torch.rand(2, *loaded.image_shape) * 2 - 1
    assert torch.equal(loaded.decode(loaded.encode(x)), x) and loaded.latent_shape == loaded.image_shape
    images, _ = loaded.generate(2, sampler=SamplerSpec("ddim", steps=2),
                                cond=loaded.condition.to_net(loaded.condition.draw(2).values))
    assert images.shape == (2, *loaded.image_shape) and torch.isfinite(images).all()
