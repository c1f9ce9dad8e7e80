"""Every config in conf/ composes, and every one that can run on a CPU runs one training step."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF, REPO, TINY_NET
from difflab.api import checks
from difflab.api.training import run
from fakes import ASSETS, fake_captioned_images, fake_cifar, fake_csv, fake_images, fake_mnist


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def data_overrides(name: str, tmp_path: Path) -> list[str]:
    """Point each data config at tiny fake files in its real format."""
    if name == "mnist":
        return [f"data.root={fake_mnist(tmp_path / 'mnist', n_train=40, n_test=20)}"]
    if name == "cifar10":
        fake_cifar(tmp_path / "cifar10")
        return [f"data.root={tmp_path / 'cifar10'}", "data.resolution=16"]
    if name in ("image_folder", "ffhq", "celeba"):
        return [f"data.root={fake_images(tmp_path / 'images', per_class=8)}", "data.resolution=16"]
    if name == "image_text":
        return [f"data.root={fake_captioned_images(tmp_path / 'pairs', n=12)}", "data.resolution=16"]
    if name == "csv":
        return [f"data.csv={fake_csv(tmp_path / 'csv', n=10)}", "data.resolution=16", "data.val_fraction=0.2"]
    if name == "shapes":
        return ["data.resolution=16", "data.num_samples=200"]
    return []


MODEL_DATA = {"cond_vector": "shapes", "regressor": "shapes"}  # models that need a data set with condition vectors
UNET_FREE = {"regressor"}  # models without a UNet (the tiny-net overrides do not apply; no sample grid)

# Latent models train their first stage in the same run when no autoencoder is given: keep it tiny.
MODEL_OVERRIDES = {"ldm": ["model.autoencoder.stage1.net.base_channels=8", "model.autoencoder.stage1.discriminator.base_channels=8",
                           "model.scale_factor_images=16"]}


def experiment_data(cfg) -> str:
    """The data option whose target the composed config uses."""
    from omegaconf import OmegaConf

    targets = {o: OmegaConf.load(CONF / "data" / f"{o}.yaml")._target_ for o in options("data")}
    return next(o for o, t in targets.items() if t == cfg.data._target_)


# Run elsewhere: model=sd samples a pretrained pipeline (tests/unit/lit/test_sd.py); model=ldm_text needs a text encoder
# and a captioned data set (tests/unit/nets/test_text.py trains it); model=diffusers loads a pipeline folder
# (tests/unit/lit/test_diffusers_import.py samples, evaluates and fine-tunes it); model=lora adapts a base model
# (tests/unit/lit/test_lora.py trains it on a tiny SD folder and on a difflab checkpoint); model=distill needs a teacher
# checkpoint (tests/cli/test_distill.py distils one with each method); sampler=own is sample.py's
# and evaluate.py's "the model's own sampler" (train.py refuses it: tests/cli/test_bad_inputs.py).
ELSEWHERE = {("model", "sd"), ("model", "ldm_text"), ("model", "diffusers"), ("model", "lora"), ("model", "distill"),
             ("sampler", "own")}

RUNNABLE = (
    [("model", o) for o in options("model") if ("model", o) not in ELSEWHERE]
    + [("scheduler", o) for o in options("scheduler")]
    + [("sampler", o) for o in options("sampler") if ("sampler", o) not in ELSEWHERE]
    + [("data", o) for o in options("data")]
    + [("logger", o) for o in options("logger") if o != "tensorboard"]  # tensorboard: the resume test below
    + [("trainer", o) for o in options("trainer") if o not in ("gpu", "ddp")]
    + [("experiment", o) for o in options("experiment")]
)


def option_overrides(group: str, option: str, train_cfg, tmp_path: Path) -> list[str]:
    """The overrides that run `group=option` at tiny size on fake files in its data's real format."""
    overrides = [f"{group}={option}"]
    if group == "data":
        overrides += data_overrides(option, tmp_path)
    if group == "model":
        overrides += MODEL_OVERRIDES.get(option, [])
    if group == "model" and option in MODEL_DATA:
        overrides += [f"data={MODEL_DATA[option]}", *data_overrides(MODEL_DATA[option], tmp_path), "metrics.cond_mae=false"]
    if group == "experiment":  # the experiment's own data set, as tiny fake files in its real format
        overrides += data_overrides(experiment_data(train_cfg(*overrides)), tmp_path)
    return overrides


@pytest.mark.parametrize("group,option", RUNNABLE, ids=[f"{g}={o}" for g, o in RUNNABLE])
def test_config_composes_and_passes_the_start_up_checks(group, option, train_cfg, tmp_path):
    """The fast lane's share of the sweep below: every option composes and passes train.py's checks."""
    overrides = option_overrides(group, option, train_cfg, tmp_path)
    cfg = train_cfg(*overrides, logger=option if group == "logger" else "csv",
                    tiny=not (group == "model" and option in UNET_FREE))
    checks.train_config(cfg)


@pytest.mark.slow  # 69 one-step trainings, about 1.5 s each
@pytest.mark.parametrize("group,option", RUNNABLE, ids=[f"{g}={o}" for g, o in RUNNABLE])
def test_config_runs_one_step(group, option, train_cfg, tmp_path):
    overrides = option_overrides(group, option, train_cfg, tmp_path)
    logger = option if group == "logger" else "csv"
    unet = not (group == "model" and option in UNET_FREE)
    cfg = train_cfg(*overrides, logger=logger, tiny=unet)
    out = run(cfg)
    assert out["global_step"] == 1
    assert (out["run_dir"] / "checkpoints" / "last.ckpt").is_file()
    assert (out["run_dir"] / "samples" / "final.png").is_file() == unet
    assert (out["run_dir"] / "config.yaml").is_file()


@pytest.mark.parametrize("option", ["gpu", "ddp"])
def test_accelerator_configs_compose(option, train_cfg):
    cfg = train_cfg(f"trainer={option}")
    assert cfg.trainer._target_ == "lightning.Trainer"
    if option == "gpu" and torch.cuda.is_available():
        assert run(cfg)["global_step"] == 1


def test_variant_presets_pick_their_sampler_and_the_command_line_wins(train_cfg):
    assert train_cfg().sampler.name == "ddpm"
    assert train_cfg("model=ddim").sampler.name == "ddim"
    assert train_cfg("model=ddim").model.net == train_cfg().model.net  # the same network
    cfg = train_cfg("model=ddpm", "sampler=ddim", "sampler.steps=50", "sampler.eta=0.0")
    assert (cfg.sampler.name, cfg.sampler.steps, cfg.sampler.eta) == ("ddim", 50, 0.0)
    assert train_cfg("scheduler=ddpm_cosine").model.scheduler.betas == "cosine"
    flow = train_cfg("model=flow", debug=None)
    assert (flow.sampler.name, flow.sampler.steps, flow.model.scheduler._target_) == ("euler", 50, "difflab.diffusion.FlowScheduler")
    assert flow.model.net == train_cfg().model.net  # the DDPM network, trained on the velocity


def test_mnist_config_reads_the_real_test_set_when_present(train_cfg):
    if not (ASSETS / "mnist").is_dir():
        pytest.skip(f"no real MNIST files at {ASSETS / 'mnist'}")
    out = run(train_cfg("data=mnist", f"data.root={ASSETS / 'mnist'}"))
    assert out["global_step"] == 1


@pytest.mark.parametrize("option", [o for o in options("debug") if o != "fast"])
def test_debug_presets_run(option, train_cfg):
    """debug=overfit (one batch, no metrics), debug=limit (a slice of the data), debug=profiler (a profile report)."""
    cfg = train_cfg("trainer.max_steps=3", "trainer.val_check_interval=3", "sampler.steps=2", "metrics.n_samples=4", debug=option)
    out = run(cfg)
    assert out["global_step"] == 3
    if option == "overfit":
        assert cfg.trainer.overfit_batches == 1 and not cfg.metrics.fid
    if option == "profiler":
        assert any(out["run_dir"].glob("*profile*.txt")), sorted(p.name for p in out["run_dir"].iterdir())


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
@pytest.mark.parametrize("option", options("hparams_search"))
def test_hparams_search_sweeps_and_each_trial_returns_its_final_metric(option, tmp_path):
    """`train.py hparams_search=optuna` (no -m: the preset is a multirun): 2 trials of one step; the study's best value
    is the lowest final val/loss that the trials' CSV logs hold, and each trial ran with the parameters it was given."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper (dev extra)")
    sweep = tmp_path / "sweep"
    argv = [sys.executable, "train.py", f"hparams_search={option}", "debug=fast", "logger=csv", "metrics=none",
            "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", f"paths.root_dir={tmp_path}", *TINY_NET,
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr[-3000:]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    finals = {}
    for trial in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        rows = [r for r in csv.DictReader(open(trial / "csv" / "metrics.csv")) if r.get("val/loss")]
        finals[trial.name] = float(rows[-1]["val/loss"])
        config = OmegaConf.load(trial / "config.yaml")
        given = dict(o.split("=", 1) for o in OmegaConf.load(trial / ".hydra" / "overrides.yaml"))
        for key in best.best_params:
            assert OmegaConf.select(config, key) == pytest.approx(float(given[key]))
    assert len(finals) == 2
    assert best.best_value == pytest.approx(min(finals.values()), rel=1e-6)
    import optuna  # the study is also in its database storage (optuna 2.10 needs SQLAlchemy < 2 for it)

    study = optuna.load_study(study_name="difflab", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(finals.values()), rel=1e-6)


def test_tensorboard_logs_each_step_once_across_a_resume(train_cfg):
    """A run resumed from its step-2 checkpoint in its own folder purges the events logged after step 2."""
    pytest.importorskip("tensorboard", reason="pip install tensorboard (dev extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    common = ["trainer.max_steps=4", "trainer.log_every_n_steps=1", "metrics=none",
              "callbacks.checkpoint_last.every_n_train_steps=2", "callbacks.checkpoint_last.save_top_k=-1"]
    first = run(train_cfg(*common, logger="[csv,tensorboard]"))
    (mid,) = (first["run_dir"] / "checkpoints").glob("*step=2.ckpt")
    run(train_cfg(*common, f"ckpt_path='{mid}'", logger="[csv,tensorboard]"))  # quoted: the name holds '='
    events = EventAccumulator(str(first["run_dir"] / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert len(list((first["run_dir"] / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per process
    assert steps == sorted(set(steps)) and len(steps) == 4, steps


def test_train_returns_the_optimized_metric_and_a_diverged_trial_counts_as_the_worst(train_cfg, monkeypatch):
    import math

    from difflab.callbacks.nan_guard import NonFiniteLossError
    from difflab.cli import train
    from difflab.errors import ConfigError

    cfg = train_cfg("optimized_metric=val/loss")
    monkeypatch.setattr(train, "run", lambda c: {"metrics": {"val/loss": 0.25, "train/loss": 0.5}})
    assert train.objective(cfg) == 0.25
    assert train.objective(train_cfg()) is None  # optimized_metric: null
    monkeypatch.setattr(train, "run", lambda c: {"metrics": {"train/loss": 0.5}})
    with pytest.raises(ConfigError, match="`optimized_metric`: the run logged no val/loss .it logged train/loss"):
        train.objective(cfg)

    def diverge(c):
        raise NonFiniteLossError("the training loss is nan")

    monkeypatch.setattr(train, "run", diverge)
    with pytest.raises(NonFiniteLossError):  # a single run: the error stands
        train.objective(cfg)
    for direction, worst in (("minimize", math.inf), ("maximize", -math.inf)):
        monkeypatch.setattr(train, "sweeper_direction", lambda d=direction: d)
        assert train.objective(cfg) == worst
