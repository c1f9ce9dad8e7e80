"""A checkpoint's stored config is data: the hostile-config corpus (no target outside the trusted ones is built,
at any depth), and every config difflab itself writes still passes."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF, compose_config
from difflab.utils.stored_config import (EXTERNAL_CONSTRUCTORS, STORED_FUNCTIONS, UntrustedTargetError,
                                         check_stored_targets, instantiate_stored, trusted_object)


class Payload:
    """Pickled, it runs `touch <marker>` when unpickled by a loader that allows code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def hostile(tmp: Path) -> dict[str, dict]:
    """name -> a config node that would run code (touch tmp/ran) or reach code if it were built."""
    marker = tmp / "ran"
    pickled = tmp / "payload.pkl"
    pickled.write_bytes(pickle.dumps(Payload(marker)))
    hub = tmp / "hub"
    hub.mkdir(exist_ok=True)
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef net():\n    return None\n")
    touch = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "torch.load": {"_target_": "torch.load", "f": str(pickled), "weights_only": False},
        "torch.hub.load": {"_target_": "torch.hub.load", "repo_or_dir": str(hub), "model": "net", "source": "local"},
        "torch.jit.load": {"_target_": "torch.jit.load", "f": str(pickled)},
        "torch.serialization.load": {"_target_": "torch.serialization.load", "f": str(pickled), "weights_only": False},
        "numpy.load": {"_target_": "numpy.load", "file": str(pickled), "allow_pickle": True},
        "pickle.loads": {"_target_": "pickle.loads", "_args_": [pickle.dumps(Payload(marker))]},
        "pickle.load": {"_target_": "pickle.load", "file": str(pickled)},
        "builtins.exec": {"_target_": "builtins.exec", "_args_": [code]},
        "builtins.eval": {"_target_": "builtins.eval", "_args_": [f"exec({code!r})"]},
        "importlib.import_module": {"_target_": "importlib.import_module", "name": "antigravity"},
        "subprocess.run": {"_target_": "subprocess.run", "args": ["touch", str(marker)]},
        "os.system": {"_target_": "os.system", "_args_": [touch]},
        "functools.partial": {"_target_": "functools.partial", "_args_": [{"_target_": "hydra.utils.get_method",
                                                                          "path": "os.system"}, touch]},
        "hydra.utils.get_method": {"_target_": "hydra.utils.get_method", "path": "os.system"},
        "hydra.utils.instantiate": {"_target_": "hydra.utils.instantiate",
                                    "config": {"_target_": "os.system", "_args_": [touch]}},
        "nested in a trusted class": {"_target_": "difflab.nets.UNet", "in_channels": {"_target_": "os.system",
                                                                                      "_args_": [touch]}},
        "smuggled in _args_": {"_target_": "difflab.diffusion.EDMScheduler", "_args_": [[{"_target_": "os.system",
                                                                                           "_args_": [touch]}]]},
        "_partial_": {"_target_": "os.system", "_partial_": True, "_args_": [touch]},
        "through a difflab module": {"_target_": "difflab.lit.checkpoint.torch.load", "f": str(pickled),
                                     "weights_only": False},
        "os through a difflab module": {"_target_": "difflab.utils.checkpoint_files.os.system", "_args_": [touch]},
        "a difflab loader not on the list": {"_target_": "difflab.lit.checkpoint.load_module", "path": "x.ckpt"},
        "a difflab front end": {"_target_": "difflab.cli.train.objective", "cfg": {}},
        "a difflab class outside the model packages": {"_target_": "difflab.utils.loggers.CSVLogger",
                                                       "save_dir": str(tmp)},
        "a method of a trusted class": {"_target_": "difflab.nets.UNet.load_state_dict"},
        "a foreign class reached as an attribute": {"_target_": "difflab.data.base.Path", "_args_": ["/"]},
        "type through __class__": {"_target_": "difflab.nets.UNet.__class__", "_args_": ["X", [], {}]},
        "an interpolated target": {"_target_": "${oc.env:EVIL_TARGET}"},
        "a non-string target": {"_target_": {"name": "os.system"}},
        "a torch callable that is no constructor": {"_target_": "torch.save", "obj": 1, "f": str(marker)},
        "torchvision's loader": {"_target_": "torchvision.io.read_file", "path": str(pickled)},
        "lightning's loader": {"_target_": "lightning.pytorch.core.saving.load_hparams_from_yaml",
                               "config_yaml": str(pickled)},
    }


def test_the_corpus_is_large_enough(tmp_path):
    assert len(hostile(tmp_path)) >= 30


@pytest.mark.parametrize("name", sorted(hostile(Path(tempfile.mkdtemp(prefix="hostile-")))))
def test_a_hostile_target_is_refused_by_name_and_nothing_runs(tmp_path, monkeypatch, name):
    monkeypatch.setenv("EVIL_TARGET", "os.system")
    node = hostile(tmp_path)[name]
    ckpt = tmp_path / "x.ckpt"
    with pytest.raises(UntrustedTargetError) as err:
        instantiate_stored(OmegaConf.create({"model": {"net": node}}).model, ckpt, "model")
    message = str(err.value)
    assert str(ckpt) in message and "`ckpt`" in message and "model.net" in message
    assert "nothing of it was run" in message
    assert not (tmp_path / "ran").exists()


def test_an_interpolation_cannot_bring_in_a_target_the_check_did_not_see(tmp_path):
    cfg = OmegaConf.create({"evil": {"_target_": "os.system", "_args_": [f"touch {tmp_path / 'ran'}"]},
                            "model": {"_target_": "difflab.nets.SmallCNN", "in_channels": 1, "out_dim": 2,
                                      "net": "${evil}"}})
    with pytest.raises(UntrustedTargetError, match=r"`_target_: os.system` at model.net"):
        instantiate_stored(cfg.model, tmp_path / "x.ckpt", "model")
    assert not (tmp_path / "ran").exists()


def test_every_listed_target_exists_and_is_trusted():
    for name in sorted(STORED_FUNCTIONS | EXTERNAL_CONSTRUCTORS):
        assert trusted_object(name) is not None, name


PRESETS = ["ddpm", "ddim", "cond", "cond_vector", "score_sde", "flow", "ldm", "ldm_text", "vae", "regressor", "sd",
           "diffusers"]


@pytest.mark.parametrize("model", PRESETS)
def test_every_model_preset_difflab_writes_passes_the_check(tmp_path, model):
    """The stored config of a run of every preset (model, data, its sampler and scheduler) names trusted targets
    only, with the pretrained first stage and every data module too."""
    data = {"cond_vector": "shapes", "regressor": "shapes", "ldm_text": "image_text"}.get(model, "digits")
    cfg = compose_config("train", [f"model={model}", f"data={data}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=False)
    check_stored_targets(resolved["model"], tmp_path / "x.ckpt", "model")
    check_stored_targets(resolved["data"], tmp_path / "x.ckpt", "data")


def test_every_data_preset_and_the_pretrained_first_stage_pass(tmp_path):
    for data in sorted(p.stem for p in (CONF / "data").glob("*.yaml")):
        cfg = compose_config("train", [f"data={data}"], tmp_path)
        check_stored_targets(OmegaConf.to_container(cfg.data), tmp_path / "x.ckpt", "data")
    cfg = compose_config("train", ["model=ldm", "model/autoencoder=pretrained"], tmp_path)
    check_stored_targets(OmegaConf.to_container(cfg.model), tmp_path / "x.ckpt", "model")


def test_a_trusted_config_is_built(tmp_path):
    built = instantiate_stored({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}, tmp_path / "x", "m")
    assert built(params=[torch.nn.Parameter(torch.zeros(1))]).defaults["lr"] == 1e-3
