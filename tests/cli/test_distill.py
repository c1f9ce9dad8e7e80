"""model=distill through the entry points: a tiny teacher distilled by each recipe into an ordinary checkpoint that
`load_module`, sample.py, evaluate.py and export.py take; progressive distillation's stage checkpoints; classifier-free
guidance distilled into a class-conditional student; a distillation run resumed from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_NET, compose_config
from difflab.api import training
from difflab.lit import DiffusionModule, DistillationModule
from difflab.lit.checkpoint import load_module
from difflab.utils.config import compose
from fakes import tiny_networks

pytestmark = pytest.mark.slow

EXPORTABLE = [*TINY_NET, "+model.net.norm_groups=8"]  # export.py needs norm groups that divide every channel count
QUICK = ["debug=fast", "logger=csv", "metrics=none"]
SAMPLER = {"consistency": "lcm", "progressive": "ddim", "reflow": "euler"}
SMALL = {"consistency": ["distill.consistency.intervals=4"], "progressive": ["distill.progressive.start_steps=4"],
         "reflow": ["distill.reflow.pairs=8", "distill.reflow.solver_steps=3"]}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step DDPM on the digits (v prediction), the tiny exportable net."""
    root = tmp_path_factory.mktemp("teacher")
    return run(root, *QUICK, *EXPORTABLE)["last_ckpt"]


def run(root: Path, *overrides: str) -> dict:
    """`python train.py <overrides>` in <root>/run, its Hydra choices recorded as in a real run."""
    return training.run(compose("train", [f"paths.root_dir={root}", *overrides], root / "run"))


def distil(root: Path, teacher: Path, method: str, *overrides: str) -> dict:
    """`python train.py model=distill distill.method=<method> distill.teacher=<teacher>`, tiny, in <root>/run."""
    return run(root, *QUICK, "model=distill", f"distill.method={method}", f"distill.teacher={teacher}",
               "trainer.max_steps=2", *SMALL[method], *overrides)


@pytest.mark.parametrize("method", sorted(SAMPLER))
def test_each_recipe_writes_a_checkpoint_of_the_student_alone(method, teacher, tmp_path):
    out = distil(tmp_path, teacher, method)
    saved = torch.load(out["last_ckpt"], weights_only=True)
    taught = torch.load(teacher, weights_only=True)
    config = saved["config"]
    assert config["model"]["_target_"] == "difflab.lit.DiffusionModule" and config["model"]["net"] == taught["config"]["model"]["net"]
    assert config["model"]["sampler"]["name"] == SAMPLER[method] and config["model"]["sampler"]["steps"] == 2  # debug=fast
    assert config["model"]["scheduler"]["grid"] == "trailing" and config["choices"]["model"] == f"ddpm+{method}"
    assert config["distill"]["method"] == method and config["distill"]["teacher"] == str(teacher)
    assert saved["state_dict"].keys() == taught["state_dict"].keys() and saved["ema"]["params"].keys() == taught["ema"]["params"].keys()
    student = load_module(out["last_ckpt"])
    assert type(student) is DiffusionModule and student.sampler.name == SAMPLER[method]
    images, nfe = student.generate(3, seed=0)
    assert images.shape == (3, 1, 16, 16) and nfe == 2 and torch.isfinite(images).all()
    torch.testing.assert_close(student.generate(3, seed=0)[0][:1], student.generate(1, seed=0)[0])  # per-image seeds
    # (equal to float rounding: oneDNN's channels_last kernels sum in an order that depends on the batch size)
    for name, value in load_module(teacher, use_ema=False).net.state_dict().items():  # read, not changed
        assert torch.equal(taught["state_dict"][f"denoiser.net.{name}"], value)


def test_the_student_round_trips_through_sample_evaluate_and_export(teacher, tmp_path):
    from difflab.cli import evaluate as evaluating
    from difflab.cli import export as exporting
    from difflab.cli import sample as sampling

    ckpt = distil(tmp_path / "train", teacher, "consistency")["last_ckpt"]
    sampled = sampling.run(compose_config("sample", [f"ckpt={ckpt}", "n=4"], tmp_path / "sample"))
    record = json.loads((Path(sampled["out_dir"]) / "samples.json").read_text())
    assert record["sampler"]["name"] == "lcm" and record["nfe"] == 2 and "trailing" in record["scheduler"]
    one = sampling.run(compose_config("sample", [f"ckpt={ckpt}", "n=2", "sampler=lcm", "sampler.steps=1"],
                                      tmp_path / "one"))
    assert json.loads((Path(one["out_dir"]) / "samples.json").read_text())["nfe"] == 1
    logsnr = sampling.run(compose_config("sample", [f"ckpt={ckpt}", "n=2", "sampler.grid=logsnr"], tmp_path / "grid"))
    record = json.loads((Path(logsnr["out_dir"]) / "samples.json").read_text())
    assert record["sampler"]["name"] == "lcm" and record["sampler"]["grid"] == "logsnr" and record["nfe"] == 2
    scored = evaluating.run(compose_config("evaluate", [f"ckpt={ckpt}", "n_samples=4", "logger=csv", "metrics=fast",
                                                        "metrics.batch_size=4", "metrics.reference.n=8",
                                                        "metrics.kid_subset_size=4", "metrics.feature_batch_size=4"],
                                           tmp_path / "evaluate"), networks=tiny_networks())
    assert scored["variant"] == "ddpm+consistency" and scored["values"]["nfe"] == 2 and scored["sampler"]["name"] == "lcm"
    diffusers = pytest.importorskip("diffusers", reason="export needs diffusers (dev extra)")
    folder = exporting.run(compose_config("export", [f"ckpt={ckpt}", f"out={tmp_path / 'exported'}", "card.n=2",
                                                     "sampler=lcm", "sampler.steps=2"], tmp_path / "export"))["out"]
    meta = json.loads((folder / "difflab.json").read_text())
    assert meta["sampler"]["name"] == "lcm" and meta["sampler"]["steps"] == 2
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    student = load_module(ckpt)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([999.0, 249.0])
    with torch.no_grad():
        assert (unet(x, t).sample - student.net(x, t)).abs().max() < 1e-4


def test_progressive_distillation_saves_each_stage_as_a_checkpoint_of_its_steps(teacher, tmp_path):
    out = distil(tmp_path, teacher, "progressive", "sampler.steps=1", "trainer.max_steps=4",
                 "distill.progressive.start_steps=8")  # stages 4, 2, 1 steps: the last gets the remaining steps
    folder = out["run_dir"] / "checkpoints"
    for steps in (4, 2, 1):
        module = load_module(folder / f"steps_{steps}.ckpt")
        assert module.sampler.name == "ddim" and module.sampler.steps == steps
        assert module.generate(2, seed=0)[1] == steps
    assert load_module(out["last_ckpt"]).sampler.steps == 1
    state = torch.load(out["last_ckpt"], weights_only=True)["distill_state"]
    assert state["current"] == 1 and state["stage_teacher"] is not None


@pytest.mark.parametrize("method", sorted(SAMPLER))
def test_the_recipe_trains_on_the_grid_the_student_samples_with(method, teacher, tmp_path, monkeypatch):
    from difflab.lit import distill_methods

    seen = []  # the 2-step grid of the scheduler each recipe is set up with (its training levels come from it)
    recipe = distill_methods.METHODS[method]
    setup = recipe.setup
    monkeypatch.setattr(recipe, "setup", lambda self, scheduler, *a, **k: (seen.append(scheduler.inference_sigmas(2)),
                                                                           setup(self, scheduler, *a, **k))[1])
    student = load_module(distil(tmp_path, teacher, method, "sampler.grid=logsnr")["last_ckpt"])
    assert student.sampler.grid == "logsnr" and student.scheduler.grid == "trailing"
    logsnr, trailing = (student.scheduler.with_grid(g).inference_sigmas(2) for g in ("logsnr", "trailing"))
    assert len(seen) == 1 and torch.equal(seen[0], logsnr) and not torch.allclose(logsnr, trailing)
    distil(tmp_path / "trailing", teacher, method)  # no sampler.grid: the trailing grid
    assert len(seen) == 2 and torch.equal(seen[1], trailing)


def test_a_grid_the_teachers_scheduler_does_not_offer_is_refused_before_training(teacher):
    from difflab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"`sampler.grid`.*'bogus'"):
        DistillationModule(load_module(teacher), "reflow", optimizer=None, sampler={"grid": "bogus"})


def test_a_distillation_run_resumes_from_its_checkpoint(teacher, tmp_path):
    first = distil(tmp_path / "a", teacher, "progressive", "sampler.steps=1", "distill.progressive.start_steps=4")
    resumed = distil(tmp_path / "b", teacher, "progressive", "sampler.steps=1", "distill.progressive.start_steps=4",
                     "trainer.max_steps=4", f"ckpt_path={first['last_ckpt']}")
    assert resumed["global_step"] == 4 and load_module(resumed["last_ckpt"]).sampler.steps == 1


def test_guidance_is_distilled_into_a_class_conditional_student(tmp_path):
    from hydra.utils import instantiate

    teacher = run(tmp_path / "teacher", *QUICK, *TINY_NET, "model=cond", "model.net.emb_channels=16",
                  "model.guidance_scale=3.0")["last_ckpt"]
    cfg = compose_config("train", [*QUICK, "model=distill", f"distill.teacher={teacher}", "distill.guidance_scale=2.0",
                                   "distill.consistency.intervals=4"], tmp_path / "student")
    module = instantiate(cfg.model)  # as train.py builds it
    assert isinstance(module, DistillationModule)
    assert module.distilled_scale == 2.0 and module.guidance_scale == 1.0 and module.condition.guided
    x, sigma, labels = torch.randn(4, 1, 16, 16), torch.full((4,), 3.0, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    null = module.condition.null(labels)
    with torch.no_grad():
        d_c, d_u = module.teacher.denoiser(x, sigma, labels), module.teacher.denoiser(x, sigma, null)
        torch.testing.assert_close(module.teacher_fn()(x, sigma, labels), (d_u + 2.0 * (d_c - d_u)).clamp(-1, 1))
    ckpt = training.run(cfg)["last_ckpt"]
    student = load_module(ckpt)
    assert student.guidance_scale == 1.0 and student.condition.guided
    assert torch.load(ckpt, weights_only=True)["config"]["distill"]["guidance_scale"] == 2.0
    images, nfe = student.generate(2, seed=0, cond=torch.tensor([3, 7]))
    assert images.shape == (2, 1, 16, 16) and nfe == 2  # guidance 1: one conditional call per step


TEACHERS = {  # other kinds of teacher: latent (stage 1 trained in the same run), flow, vector-conditioned
    "ldm": ["model=ldm", "model.autoencoder.stage1.net.base_channels=8", "model.scale_factor_images=16",
            "model.autoencoder.stage1.discriminator.base_channels=8"],
    "flow": ["model=flow"],
    "cond_vector": ["model=cond_vector", "model.net.emb_channels=16", "data=shapes", "data.resolution=16",
                    "data.num_samples=64"],
}


@pytest.mark.parametrize("kind", sorted(TEACHERS))
def test_latent_flow_and_vector_conditioned_teachers_distil(kind, tmp_path):
    teacher = run(tmp_path / "teacher", *QUICK, *TINY_NET, *TEACHERS[kind])["last_ckpt"]
    data = [o for o in TEACHERS[kind] if o.startswith("data")]
    for method in ("consistency", "reflow"):
        out = distil(tmp_path / method, teacher, method, *data)
        student, parent = load_module(out["last_ckpt"]), load_module(teacher)
        assert type(student.autoencoder) is type(parent.autoencoder) and student.latent_shape == parent.latent_shape
        assert student.scheduler.grid == ("uniform" if kind == "flow" else "trailing")
        assert student.condition.kind == parent.condition.kind
        cond = torch.zeros(2, 8) if kind == "cond_vector" else None  # z-scored attributes: the mean shape
        images, nfe = student.generate(2, seed=0, cond=cond)
        assert images.shape == (2, *parent.image_shape) and nfe == 2 and torch.isfinite(images).all()
