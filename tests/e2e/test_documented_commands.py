"""README and docs commands are tests: every documented command line runs at tiny size, or says why it cannot.

Every command line in the shell blocks of README.md and docs/**/*.md that starts with `python <script>.py`,
`python -m difflab...`, `difflab-<cmd>`, `sbatch`, `mkdocs`, `lint-imports` or `pytest` (tests/doc_commands.py
reads them) is classified in `COMMANDS`: a `Run` says how it is made tiny and what it must leave, a `Skip` why it
cannot run here (a GPU, a SLURM cluster, a download, a web server another test drives, or minutes of compute even
at tiny size, with the cost measured). A documented command missing from the table fails, and so does an entry
whose command left the docs. The Python blocks of a page run as one script (`PYTHON_BLOCKS`).

Two lanes:
- `test_documented_command_composes` (fast, unmarked): every entry-point command, run or skipped, composes its
  Hydra config with its own overrides in this process and passes the up-front checks that read no file, so a
  renamed key, a removed preset or a sampler name no longer known fails at once (about 0.2 s a command).
- `test_documented_command_runs` / `test_documented_python_runs` (slow): the `Run` commands for real. Placeholders
  (`...`, `<run>`, `<regressor>`, `<folder>`, `/data/mnist`, ...) become tiny checkpoints, pipeline folders and
  fake data sets made once for the module (`FIXTURES`, tests/doc_fixtures.py; several are the outputs of documented
  commands, as a reader would chain them), and size overrides are appended so that they win: one training step of
  an 8-channel net, a few images, two sampling steps where a command's own count only costs time, metrics without
  pretrained networks (`NO_WEIGHTS`: no FID/KID/IS/LPIPS/CLIP weights exist offline; broken rate, samples/s and NFE
  are still computed). Every command runs in its own folder (the page's folder for docs/conditioned_workflow.md,
  run top to bottom as the page says) in a child forked from one warm process (tests/cli_runner.py), offline, and
  must exit with 0 and leave its main output (`expect`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from doc_commands import (
    REPO,
    Lab,
    Run,
    Session,
    Skip,
    documented_commands,
    fields,
    python_blocks,
    shell_lines,
    split_command,
)
from doc_fixtures import (
    captions,
    celeba,
    digit_png,
    ffhq,
    film_conds,
    from_fakes,
    photo_png,
    prompts,
    random_pngs,
    sd,
    sdxl,
    thinfilm,
    written,
)
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import difflab
from difflab.api import checks
from difflab.api.config import rewrite_argv

ASSETS = REPO.parent / "shared" / "assets"
INCEPTION = ASSETS / "inception" / "inception_fid_trunk.pth"
NET = ("model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
       "model.net.attention_resolutions=[]", "model.net.num_heads=1")
NO_WEIGHTS = ("metrics.fid=false", "metrics.kid=false", "metrics.inception_score=false", "metrics.lpips_diversity=false",
              "metrics.clip_score=false", "metrics.condition_accuracy=false", "metrics.cond_mae=false")
STEP = ("debug=fast", "trainer.max_steps=1", "trainer.val_check_interval=1", "data.batch_size=4")
TRAIN = (*STEP, *NET, *NO_WEIGHTS)
STAGE1 = ("model.autoencoder.stage1_steps=1", "model.autoencoder.stage1.net.base_channels=8",
          "model.autoencoder.stage1.net.channel_mult=[1,2]", "model.autoencoder.stage1.net.num_res_blocks=1",
          "model.autoencoder.stage1.net.attention_resolutions=[]",
          "model.autoencoder.stage1.discriminator.base_channels=8", "model.autoencoder.stage1.discriminator.num_layers=1",
          "model.scale_factor_images=8", "model.autoencoder.downsample_factor=2")
VAE = ("model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
       "model.net.attention_resolutions=[]", "model.discriminator.base_channels=8", "model.discriminator.num_layers=1")
COMPARE = (*STEP, *NO_WEIGHTS, "logger=csv", "metrics.n_samples=8", "metrics.batch_size=8", "model.net.base_channels=8",
           "model.net.channel_mult=[1,2]", "model.net.num_heads=1", "compare.latent_scale_images=16",
           "compare.stage1_channels=8")
DDPM = (*TRAIN, "+model.net.norm_groups=8", "logger=csv")  # exportable: groups of 8 divide every channel count
CKPT = "runs/train/*/checkpoints/last.ckpt"
SAMPLES, METRICS = "runs/sample/*/samples.json", "runs/evaluate/*/metrics.json"
RUN_DIR = {"files": {"runs/train/ddpm": "ddpm"}, "subs": {"<run>": "ddpm"}}  # runs/train/<run>: the tiny DDPM's folder

SLURM = "needs a SLURM cluster (submitit); tests/e2e/test_slurm.py runs this route on a local one-node cluster"
SBATCH = "needs a SLURM cluster; tests/e2e/test_slurm.py submits slurm/train.sbatch to a local one-node cluster"
TINY_SAME = "at this test's size it is `{}` (run)"
MULTIRUN_SAME = ("{} training runs (half a minute at this test's size); the multirun route runs in "
                 "`python train.py -m experiment=compare_variants variant=ddpm,flow` and evaluate.py's `-m guidance_scale=1,2,4,8`")
STUDIO = "starts a web server; tests/e2e/test_studio_browser.py starts it and drives the page in a browser"
WORKFLOW = "docs/conditioned_workflow.md"
DISTILL_TESTS = "tests/cli/test_distill.py"
STUDENT = (f"{DISTILL_TESTS}::test_the_student_round_trips_through_sample_evaluate_and_export samples, evaluates and "
           "exports a distilled student")
FROM_PNG = ("tests/unit/api/test_from_png.py::test_the_documented_command_reproduces_from_the_command_line runs it on "
            "an image of a tiny model")
XYZ = "tests/unit/api/test_xyz.py::test_the_documented_command_draws_its_grid runs it on a tiny model"
THINFILM = "tests/cli/test_thinfilm_experiment.py makes the interference data and runs the sweep at tiny size"


def train(*extra: str, expect: str = CKPT, **kw) -> Run:
    return Run((expect,), (*TRAIN, *extra), **kw)


def lora(*extra: str, **kw) -> Run:
    return Run(("runs/train/*/lora.safetensors",), (*LORA, *extra), **kw)


def sample(ckpt: str | None, *extra: str, n: bool = True, **kw) -> Run:
    subs = {"ckpt=...": f"ckpt={{{ckpt}}}/checkpoints/last.ckpt"} if ckpt else {}
    return Run(kw.pop("expect", (SAMPLES,)), (*(("n=4",) if n else ()), *extra), {**subs, **kw.pop("subs", {})}, **kw)


def evaluate(ckpt: str | None, *extra: str, expect: tuple[str, ...] = (METRICS,), **kw) -> Run:
    subs = {"ckpt=...": f"ckpt={{{ckpt}}}/checkpoints/last.ckpt"} if ckpt else {}
    return Run(expect, ("n_samples=4", *NO_WEIGHTS, *extra), {**subs, **kw.pop("subs", {})}, **kw)


def evaluate_sweep(ckpt: str, jobs: int) -> Run:
    return Run(("runs/evaluate/multirun/*/comparison.md", f"runs/evaluate/multirun/*/{jobs - 1}/metrics.json"),
               ("n_samples=2", *NO_WEIGHTS), {"ckpt=...": f"ckpt={{{ckpt}}}/checkpoints/last.ckpt"})


def optuna(*extra: str, **kw) -> Run:
    return train("hydra.sweeper.n_trials=2", *extra, expect="runs/train/multirun/*/optimization_results.yaml", **kw)


def workflow(expect: str, *extra: str, after: tuple[str, ...] = ()) -> Run:
    return Run((expect,), extra, folder="workflow", after=after)


def resumed_to_step_2(folder: Path) -> None:
    ckpt = torch.load(folder / "runs/train/ddpm/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2


W = {  # docs/conditioned_workflow.md, in its order
    "shapes": "python train.py model=cond_vector data=shapes data.resolution=8 data.num_samples=1000 trainer.max_steps=20 "
              "model.net.base_channels=8 model.net.channel_mult=[1,2] model.net.attention_resolutions=[] "
              "model.net.emb_channels=32 scheduler=edm sampler=euler sampler.steps=10 model.optimizer.lr=2e-3 "
              "model.lr_scheduler.warmup_steps=20 data.batch_size=32 logger=csv metrics=none "
              "trainer.enable_progress_bar=false hydra.run.dir=runs/train/shapes_vector",
    "shapes_regressor": "python train.py model=regressor data=shapes data.resolution=8 data.num_samples=1000 "
                        "trainer.max_steps=150 trainer.val_check_interval=150 logger=csv trainer.enable_progress_bar=false "
                        "hydra.run.dir=runs/train/shapes_regressor",
    "table": "python sample.py ckpt=runs/train/shapes_vector/checkpoints/last.ckpt cond_csv=conds.csv "
             "regressor=runs/train/shapes_regressor/checkpoints/last.ckpt out_dir=samples/shapes_table",
    "film": "python docs/examples/film_csv.py data/film --n 240",
    "film_vector": "python train.py model=cond_vector data=csv data.csv=data/film/film.csv data.columns=[x1,x2,x3,x4] "
                   "data.roi=[16,8,40,80] data.resolution=16 data.val_fraction=0.1 trainer.max_steps=15 "
                   "model.net.base_channels=8 model.net.channel_mult=[1,2] model.net.attention_resolutions=[] "
                   "model.net.emb_channels=32 scheduler=edm sampler=euler sampler.steps=10 model.optimizer.lr=2e-3 "
                   "model.lr_scheduler.warmup_steps=20 data.batch_size=32 logger=csv metrics=none "
                   "trainer.enable_progress_bar=false hydra.run.dir=runs/train/film_vector",
    "film_regressor": "python train.py model=regressor data=csv data.csv=data/film/film.csv data.columns=[x1,x2,x3,x4] "
                      "data.roi=[16,8,40,80] data.resolution=16 data.val_fraction=0.1 trainer.max_steps=100 "
                      "trainer.val_check_interval=100 data.batch_size=32 logger=csv trainer.enable_progress_bar=false "
                      "hydra.run.dir=runs/train/film_regressor",
    "img2img": "python sample.py ckpt=runs/train/film_vector/checkpoints/last.ckpt mode=img2img "
               "init_image=data/film/images/0007.png strength=0.5 n=4 \"cond={x1: 0.5, x2: 0.09, x3: 0.9, x4: 0.25}\" "
               "out_dir=samples/film_img2img",
}
EXPORT = "python export.py ckpt=runs/train/<run>/checkpoints/last.ckpt format=diffusers out=exported/digits-ddpm"
VAE_TRAIN = "python train.py model=vae data=ffhq"
LDM_TRAIN = "python train.py model=ldm data=ffhq model.autoencoder.ckpt=runs/train/<vae run>/checkpoints/last.ckpt"
LORA_SD = ("python train.py model=lora base=<SD / SDXL folder> data=image_text data.root=<image-caption pairs> "
           "data.resolution=512")
LORA = (*STEP, "data.batch_size=2", "model.rank=2", "sampler.steps=2", "callbacks.sample_grid.n=2")
LDM_TEXT_TRAIN = "python train.py model=ldm_text data=image_text data.root=clean.jsonl"

COMMANDS: dict[str, Run | Skip] = {
    # README.md
    "python train.py": train(),
    "WANDB_MODE=offline python -m pytest -q": Skip("the whole test suite, this test among them (CI runs it)"),
    "python train.py debug=fast": Skip(TINY_SAME.format("python train.py")),
    "python train.py hparams_search=optuna experiment=digits_ddim_quick metrics=none": optuna(),
    "python train.py model=ddim logger=csv": train(),
    "python train.py model=cond": train(),
    "python sample.py ckpt=runs/train/<run>/checkpoints/last.ckpt sampler=dpmpp_2m sampler.steps=20 n=64 seed=0":
        sample(None, **RUN_DIR),
    'python sample.py ckpt=... sampler="DPM++ 2M Karras" sampler.steps=10': sample("ddpm"),
    "python sample.py ckpt=... class_label=3 guidance_scale=4 n=16": sample("cond"),
    "python train.py model=regressor data=shapes": Run((CKPT,), (*STEP, "data.resolution=8", "data.num_samples=64")),
    "python predict.py ckpt=<regressor> images=<folder | csv> out=preds.csv":
        Run(("preds.csv",), subs={"<regressor>": "{film_regressor}/checkpoints/last.ckpt", "<folder | csv>": "{film_images}"}),
    "python evaluate.py ckpt=... metrics=full n_samples=10000": evaluate("ddpm"),
    "python evaluate.py ckpt=... -m sampler=ddim,dpmpp_2m,heun sampler.steps=10,20,50": Skip(
        "9 evaluations (52 s at this test's size); the evaluate.py sweep runs in `-m guidance_scale=1,2,4,8` (run)"),
    "python compare.py": Run(("runs/compare/*/comparison.md",), files={"runs/train/ddpm": "ddpm"}),
    "python studio.py": Skip(STUDIO),
    "python train.py -m experiment=compare_variants": Skip(
        "tests/e2e/test_compare_variants.py runs this sweep at this size and checks its seven rows; the variants "
        "below run here"),
    "python train.py hydra.run.dir=runs/train/<run> ckpt_path=runs/train/<run>/checkpoints/last.ckpt":
        Run(("runs/train/ddpm/checkpoints/last.ckpt",), (*DDPM, "trainer.max_steps=2"), {"<run>": "ddpm"},
            {"runs/train/ddpm": "copy:ddpm"}, check=resumed_to_step_2),
    "python train.py trainer=ddp trainer.devices=4": train(needs="4 GPUs"),
    'python sample.py model=sd pipeline.path=<SD or SDXL folder> "prompt=(masterpiece:1.2), a [dog:cat:0.5]"':
        sample(None, "steps=2", subs={"<SD or SDXL folder>": "{sd}"}),
    "python train.py model=lora base=<SD folder> data=image_text data.root=<pairs>":
        lora("data.resolution=16", subs={"<SD folder>": "{sd}", "<pairs>": "{captions}/images"}),
    "python export.py ckpt=... out=<folder>": Run(("exported/ddpm/model_index.json",), ("card.n=4",),
                                                  {"ckpt=...": "ckpt={ddpm}/checkpoints/last.ckpt",
                                                   "<folder>": "exported/ddpm"}),
    # docs/conditioned_workflow.md: one folder, top to bottom
    W["shapes"]: workflow("runs/train/shapes_vector/checkpoints/last.ckpt", *STEP, "data.num_samples=64"),
    W["shapes_regressor"]: workflow("runs/train/shapes_regressor/checkpoints/last.ckpt", *STEP,
                                    "trainer.max_steps=2", "trainer.val_check_interval=2", "data.num_samples=64"),
    W["table"]: Run(("samples/shapes_table/conditions.csv",), folder="workflow", files={"conds.csv": "shapes_conds"},
                    after=(W["shapes"], W["shapes_regressor"])),
    'python sample.py ckpt=runs/train/shapes_vector/checkpoints/last.ckpt "sweep={background: [0.0, 0.3, 7]}" '
    "sweep_seeds=3 regressor=runs/train/shapes_regressor/checkpoints/last.ckpt out_dir=samples/shapes_sweep":
        workflow("samples/shapes_sweep/sweep.png", after=(W["shapes"], W["shapes_regressor"])),
    "python predict.py ckpt=runs/train/shapes_regressor/checkpoints/last.ckpt "
    "images=samples/shapes_table/conditions.csv out=samples/shapes_table/preds.csv":
        workflow("samples/shapes_table/preds.csv", after=(W["table"],)),
    W["film"]: workflow("data/film/film.csv"),
    W["film_vector"]: workflow("runs/train/film_vector/checkpoints/last.ckpt", *STEP, after=(W["film"],)),
    W["film_regressor"]: workflow("runs/train/film_regressor/checkpoints/last.ckpt", *STEP, "trainer.max_steps=2",
                                  "trainer.val_check_interval=2", after=(W["film"],)),
    "python predict.py ckpt=runs/train/film_regressor/checkpoints/last.ckpt images=data/film/film.csv "
    "out=preds_real.csv": workflow("preds_real.csv", after=(W["film_regressor"],)),
    'python sample.py ckpt=runs/train/film_vector/checkpoints/last.ckpt "sweep={x4: [0.0, 0.3, 5]}" sweep_seeds=2 '
    "regressor=runs/train/film_regressor/checkpoints/last.ckpt out_dir=samples/film_sweep":
        workflow("samples/film_sweep/sweep.png", after=(W["film_vector"], W["film_regressor"])),
    W["img2img"]: workflow("samples/film_img2img/samples.json", after=(W["film_vector"],)),
    "python predict.py ckpt=runs/train/film_regressor/checkpoints/last.ckpt images=samples/film_img2img/images "
    "out=preds_img2img.csv": workflow("preds_img2img.csv", after=(W["film_regressor"], W["img2img"])),
    # docs/conditioning.md
    "python train.py model=cond_vector data=shapes": train("data.resolution=8", "data.num_samples=64"),
    "python train.py model=cond_vector data=csv data.csv=table.csv data.roi=[678,0,767,2452] data.resolution=128 "
    "data.columns=[x1,x2,x3,x4,x5,x6,x7,x8]": train(files={"table.csv": "thinfilm/table.csv",
                                                           "images": "thinfilm/images"}),
    "python sample.py ckpt=... cond='{x1: 0.3, x2: 1.2, ...}' n=16":
        sample("film_vector", subs={", ...}": ", x3: 0.9, x4: 0.25}}"}),
    "python sample.py ckpt=... cond_csv=conds.csv": sample("film_vector", n=False, files={"conds.csv": "film_conds"}),
    "python evaluate.py ckpt=... metrics=fast": evaluate("film_vector", "metrics.cond_mae=true",  # where it trained
                                                         "metrics.regressor={film_regressor}/checkpoints/last.ckpt",
                                                         folder="workflow"),
    # docs/ecosystem.md
    EXPORT: Run(("exported/digits-ddpm/model_index.json",), ("card.n=4",), **RUN_DIR),
    "python sample.py model=diffusers pipeline.path=<folder> sampler=dpmpp_2m sampler.steps=20 n=16":
        sample(None, subs={"<folder>": "{pipeline}"}),
    "python evaluate.py model=diffusers pipeline.path=<folder> data=cifar10 metrics=fast":
        evaluate(None, subs={"<folder>": "{cifar10_pipeline}"}, files={"data/cifar10": "cifar10"}),
    "python train.py model=diffusers pipeline.path=<folder> data=<its data> trainer.max_steps=2000":
        Run((CKPT,), (*STEP, *NO_WEIGHTS), {"<folder>": "{pipeline}", "<its data>": "digits"}),
    # docs/hparams-search.md
    "python train.py hparams_search=optuna": Skip(
        "20 trials of the default recipe; at this test's size it is README's digits_ddim_quick search (run)"),
    "python train.py hparams_search=optuna experiment=digits_ddim_quick metrics=none logger=csv "
    "hydra.sweeper.n_trials=8": Skip(TINY_SAME.format(
        "python train.py hparams_search=optuna experiment=digits_ddim_quick metrics=none")),
    "python train.py hparams_search=optuna 'model.optimizer.lr=tag(log, interval(3e-4, 3e-3))'":
        optuna(),
    "python train.py hparams_search=optuna metrics=default optimized_metric=val/fid":
        optuna("metrics.fid=true", "metrics.n_samples=4", "metrics.batch_size=4", "metrics.reference.n=8",
               needs="the FID Inception weights"),
    "python train.py logger=tensorboard": Skip(
        "the TensorBoard events file is checked after `python train.py logger=[csv,tensorboard]` (run)"),
    # docs/ldm.md (data/ffhq and data/celeba: a few fake images where the presets look)
    VAE_TRAIN: Run((CKPT,), (*STEP, *VAE, *NO_WEIGHTS), files={"data/ffhq": "ffhq"}),
    LDM_TRAIN: train("model.scale_factor_images=8", "model.autoencoder.downsample_factor=2",
                     files={"data/ffhq": "ffhq", "runs/train/vae": "vae"}, subs={"<vae run>": "vae"}, folder="ldm"),
    "python train.py model=ldm data=ffhq": train(*STAGE1, files={"data/ffhq": "ffhq"}),
    "python train.py model=ldm data=ffhq model.autoencoder=pretrained model.autoencoder.path=/models/sd-vae-ft-mse":
        train("model.autoencoder.downsample_factor=2", "model.scale_factor_images=8", files={"data/ffhq": "ffhq"},
              subs={"/models/sd-vae-ft-mse": "{diffusers_vae}"}),
    "python train.py model=ldm data=ffhq model.autoencoder.ckpt=... data.cache_latents=true":
        train("model.scale_factor_images=8", "model.autoencoder.downsample_factor=2", files={"data/ffhq": "ffhq"},
              subs={"model.autoencoder.ckpt=...": "model.autoencoder.ckpt={vae}/checkpoints/last.ckpt"}),
    "python train.py model=ldm data=celeba data.resolution=128 sampler=dpmpp_2m sampler.steps=20":
        train(*STAGE1, "data.resolution=16", files={"data/celeba/img_align_celeba.zip": "celeba"}),
    "python sample.py ckpt=<ldm run>/checkpoints/last.ckpt n=64":  # where it trained: the run names its stage 1 by
        sample(None, subs={"<ldm run>": "{ldm}"}, folder="ldm"),  # a relative path, runs/train/vae/...
    # docs/resuming.md: cut short by SIGTERM after its first images, then the documented command finishes it
    "python sample.py ckpt=runs/train/<run>/checkpoints/last.ckpt n=20000 out_dir=samples/big resume=true":
        Run(("samples/big/samples.json",), ("n=8", "batch_size=2"), **RUN_DIR,
            interrupt_first={"glob": "samples/big/images/*.png", "count": 2, "signal": 15}),
    # docs/scaling-out.md, docs/slurm.md
    "python train.py trainer=ddp trainer.accelerator=cpu trainer.devices=2": train(),
    "python train.py trainer.precision=16-mixed": train(needs="a GPU"),
    "python train.py model.compile=true model.channels_last=true model.net.gradient_checkpointing=true": Skip(
        "torch.compile of the UNet takes about 3 minutes on this CPU (174 s measured at this test's size)"),
    "python train.py -m model=ddpm,ddim,score_sde seed=0,1": Skip(MULTIRUN_SAME.format(6)),
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu model=ddpm,ddim": Skip(SLURM),
    "sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 slurm/train.sbatch model=ddim data=cifar10": Skip(SBATCH),
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu model=ddpm,ddim,score_sde seed=0,1":
        Skip(SLURM),
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu trainer=ddp trainer.devices=4 "
    "model=ddpm,ddim": Skip(SLURM),
    "sbatch slurm/train.sbatch model=ddim data=cifar10 trainer.max_steps=200000": Skip(SBATCH),
    "sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 slurm/train.sbatch experiment=cifar10_ddpm": Skip(SBATCH),
    "sbatch --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 slurm/train.sbatch trainer=cpu": Skip(SBATCH),
    # docs/studio.md
    "python studio.py port=0 runs_dir=/data/runs ckpt_dirs=[/data/runs,/data/sd]": Skip(STUDIO),
    "python sample.py ckpt=/abs/runs/train/<run>/checkpoints/last.ckpt sampler=dpmpp_2m sampler.steps=20 n=4 "
    "seed=5643043519438802793": sample(None, subs={"/abs/runs/train/<run>": "{ddpm}"}),
    # docs/lora.md (a tiny random SD folder; the LoRA run's file stands in for the page's style and detail files)
    LORA_SD: lora("data.resolution=16", subs={"<SD / SDXL folder>": "{sd}", "<image-caption pairs>": "{captions}/images"}),
    "python train.py model=lora base=<SD folder> data=image_folder data.root=<images> caption=\"a photo of sks dog\"":
        lora("data.resolution=16", subs={"<SD folder>": "{sd}", "<images>": "{pngs}"}),
    "python train.py model=lora base=<run>/checkpoints/last.ckpt data=digits":
        lora(subs={"<run>": "{ddpm}"}),
    'python sample.py model=sd pipeline.path=<SD folder> prompt="a photo of sks dog" lora=[<run>/lora.safetensors:0.8]':
        sample(None, "steps=2", subs={"<SD folder>": "{sd}", "<run>": "{lora_sd}"}),
    "python evaluate.py model=sd pipeline.path=<SD folder> prompts=prompts.txt "
    "lora=[style.safetensors:0.8,detail.safetensors:0.5]":
        evaluate(None, "steps=2", subs={"<SD folder>": "{sd}"}, files={"prompts.txt": "prompts",
                 "style.safetensors": "lora_sd/lora.safetensors", "detail.safetensors": "lora_sd/lora.safetensors"}),
    # docs/prompts.md
    'python sample.py model=sd pipeline.path=<SD or SDXL folder> "prompt=(masterpiece:1.2), a [dog:cat:0.5] in a '
    '[park|garden] BREAK golden hour" "negative_prompt=(worst quality:1.4), lowres" steps=30':
        sample(None, "steps=2", subs={"<SD or SDXL folder>": "{sdxl}"}),
    # docs/text-to-image.md (a tiny random Stable Diffusion folder, as tests/unit/lit/test_sd.py builds)
    'python sample.py model=sd pipeline.path=<sd folder or Hub name in the cache> prompt="a photo of a mackerel '
    'running on a playground" "negative_prompt=blurry, low quality" guidance_scale=7.5 steps=30 seed=42 '
    "sampler=dpmpp_2m scheduler.grid=karras": sample(None, "steps=2",
                                                      subs={"<sd folder or Hub name in the cache>": "{sd}"}),
    'python sample.py model=sd pipeline.path=<SDXL folder> "prompt=(masterpiece:1.2), a [dog:cat:0.5]" '
    '"negative_prompt=(worst quality:1.4)" pipeline.original_size=[1024,1024] mode=img2img init_image=photo.png':
        sample(None, "steps=4", subs={"<SDXL folder>": "{sdxl}"}, files={"photo.png": "photo_png"}),
    "python evaluate.py model=sd pipeline.path=... prompts=prompts.txt":
        evaluate(None, "steps=2", subs={"pipeline.path=...": "pipeline.path={sd}"}, files={"prompts.txt": "prompts"}),
    "python evaluate.py model=sd pipeline.path=... prompts=prompts.txt n_samples=1000 data=image_folder "
    "data.root=<reference images>": evaluate(None, "steps=2", subs={"pipeline.path=...": "pipeline.path={sd}",
                                                         "<reference images>": "{reference_images}"},
                                             files={"prompts.txt": "prompts"}),
    "python -m difflab.cli.prepare_captions <caption folder | index.jsonl | index.csv> --out clean.jsonl "
    "--clip-min 0.28 --min-size 64": Skip(
        "needs CLIP ViT-B/32 weights (--clip, a Hub download); tests/unit/nets/test_text.py runs its filter on a "
        "tiny CLIP"),
    LDM_TEXT_TRAIN: train(*STAGE1, "model.net.context_dim=32", "model.text_encoder.path={clip_text}",
                          "data.resolution=16", files={"clean.jsonl": "captions/clean.jsonl",
                                                       "images": "captions/images"}),
    'python sample.py ckpt=<ldm_text run>/checkpoints/last.ckpt prompt="a red circle" guidance_scale=5':
        sample(None, subs={"<ldm_text run>": "{ldm_text}"}),
    # docs/usage.md
    "python train.py logger=csv": Skip(
        "the csv logger runs in `python train.py model=ddim logger=csv` (run) and in the tiny DDPM every sample command loads"),
    "python train.py model=ddim": Skip(TINY_SAME.format("python train.py model=ddim logger=csv")),
    "python train.py model=ddpm sampler=ddim sampler.steps=50 sampler.eta=0.0": train("sampler.steps=2"),
    "python train.py scheduler=ddpm_cosine scheduler.prediction=v model.loss.weighting=min_snr": train(),
    "python train.py model=score_sde": train(),
    "python sample.py ckpt=... sampler=dpmpp_2m sampler.steps=20 scheduler.grid=karras": sample("ddpm"),
    "python sample.py ckpt=... sampler=unipc sampler.steps=10 sampler.grid=optimized": Skip(
        "sampler.grid=optimized searches a step grid for the checkpoint (40 s at sampler.grid_effort=0.05 here); "
        "tests/unit/samplers/test_grids.py runs the search"),
    "python sample.py ckpt=... sweep='{x3: [0.1, 0.9, 9]}' sweep_seeds=4 regressor=<regressor ckpt>":
        sample("film_vector", "sweep_seeds=1", n=False, subs={"<regressor ckpt>": "{film_regressor}/checkpoints/last.ckpt"}),
    "python evaluate.py ckpt=... -m guidance_scale=1,2,4,8": evaluate_sweep("cond", 4),
    "python sample.py ckpt=... mode=img2img init_image=digit.png strength=0.5 n=16":
        sample("ddpm", files={"digit.png": "digit_png"}),
    "python train.py data=mnist data.root=/data/mnist": train(subs={"/data/mnist": "{mnist}"}),
    "python train.py experiment=cifar10_ddpm data.root=/data/cifar10": train(subs={"/data/cifar10": "{cifar10}"}),
    "python train.py logger=[csv,tensorboard]": train(expect="runs/train/*/tensorboard/events.out.tfevents.*"),
    "python train.py -m model=ddpm,ddim seed=0,1": Skip(MULTIRUN_SAME.format(4)),
    "python sample.py ckpt=runs/train/<run>/checkpoints/last.ckpt sampler=ddim sampler.steps=25 n=64 seed=0":
        sample(None, "sampler.steps=2", **RUN_DIR),
    "python train.py metrics=default": train("metrics.n_samples=16", expect="runs/train/*/metrics.json"),
    "python evaluate.py ckpt=runs/train/<run>/checkpoints/last.ckpt sampler=ddim sampler.steps=50 metrics=full "
    "n_samples=10000": evaluate(None, **RUN_DIR),
    "python evaluate.py images=/path/to/pngs data=cifar10 metrics=full":
        Run((METRICS,), NO_WEIGHTS, {"/path/to/pngs": "{pngs}"}, {"data/cifar10": "cifar10"}),
    "python evaluate.py ckpt=... -m sampler=ddim,dpmpp_2m,heun,pc sampler.steps=10,20,50": Skip(
        "12 evaluations (73 s at this test's size); the evaluate.py sweep runs in `-m guidance_scale=1,2,4,8` (run)"),
    "python evaluate.py ckpt=... metrics=nll": Run((METRICS,), ("metrics.nll.n=2", "metrics.nll.batch_size=2",
                                                    "metrics.nll.rtol=1e-2", "metrics.nll.atol=1e-2"),
                                                   {"ckpt=...": "ckpt={ddpm}/checkpoints/last.ckpt"}),
    "python train.py model=flow": Skip(
        "flow matching trains in `python train.py model=flow scheduler.t_distribution=uniform` (run), whose run the "
        "flow sample commands load"),
    'python sample.py model=sd pipeline.path=<sd folder> prompt="a photo of a cat" steps=30 sampler=dpmpp_2m':
        sample(None, "steps=2", subs={"<sd folder>": "{sd}"}),
    "python export.py ckpt=runs/train/<run>/checkpoints/last.ckpt out=<folder>":
        Run(("exported/ddpm/model_index.json",), ("card.n=4",), {"<run>": "ddpm", "<folder>": "exported/ddpm"},
            {"runs/train/ddpm": "ddpm"}),
    "python sample.py model=diffusers pipeline.path=<folder> sampler=dpmpp_2m": sample(None,
                                                                                       subs={"<folder>": "{pipeline}"}),
    "python evaluate.py ckpt=... logger=wandb": evaluate("ddpm"),
    # docs/variants.md
    "python train.py -m experiment=compare_variants variant=ddpm,flow":
        Run(("runs/train/multirun/*/comparison.md",), COMPARE),
    "python train.py -m experiment=compare_variants trainer.max_steps=500": Skip(
        "at one training step (this test's size) it is the sweep above, which tests/e2e/test_compare_variants.py runs"),
    "python train.py -m experiment=compare_variants compare.ddim_steps=20": Skip(
        "the seven-variant sweep (28 s at this test's size); tests/e2e/test_compare_variants.py runs it"),
    "python train.py -m experiment=compare_variants metrics=default trainer=gpu":
        Run(("runs/train/multirun/*/comparison.md",), COMPARE, needs="a GPU"),
    "python train.py -m experiment=compare_variants hydra/launcher=slurm": Skip(SLURM),
    "python train.py '+metrics.also_sample.ddim={name: ddim, steps: 50}' "
    "'+metrics.also_sample.dpm={name: dpmpp_2m, steps: 10}'":
        train("metrics.n_samples=8", "metrics.also_sample.ddim.steps=2", "metrics.also_sample.dpm.steps=2",
              expect="runs/train/*/dpm/metrics.json"),
    "python train.py model=flow scheduler.t_distribution=uniform": train(),
    "python sample.py ckpt=... sampler=heun sampler.steps=20 sampler.grid=karras": sample("flow"),
    "python sample.py ckpt=... scheduler.shift=3.0": sample("flow"),
    # distillation, settings in every image, X/Y/Z grids, paste-back, the thin-film experiment: each has its own
    # tests that run these commands (or the same call) at tiny size beside their oracles
    "python train.py model=distill distill.teacher=runs/train/<run>/checkpoints/last.ckpt": Skip(
        f"a teacher checkpoint first; {DISTILL_TESTS} distils one with each method"),
    "python train.py model=distill distill.method=consistency distill.teacher=runs/train/<run>/checkpoints/last.ckpt":
        Skip(f"{DISTILL_TESTS}::test_each_recipe_writes_a_checkpoint_of_the_student_alone[consistency]"),
    "python train.py model=distill distill.method=progressive distill.teacher=<ckpt> sampler.steps=1": Skip(
        f"{DISTILL_TESTS}::test_progressive_distillation_saves_each_stage_as_a_checkpoint_of_its_steps"),
    "python train.py model=distill distill.method=reflow distill.teacher=<ckpt>": Skip(
        f"{DISTILL_TESTS}::test_each_recipe_writes_a_checkpoint_of_the_student_alone[reflow]"),
    "python sample.py ckpt=<student run>/checkpoints/last.ckpt": Skip(STUDENT),
    "python sample.py ckpt=<student run>/checkpoints/last.ckpt sampler=lcm sampler.steps=1": Skip(STUDENT),
    "python sample.py ckpt=<student run>/checkpoints/last.ckpt sampler.grid=logsnr": Skip(STUDENT),
    "python evaluate.py ckpt=<student run>/checkpoints/last.ckpt metrics=default": Skip(STUDENT),
    "python export.py ckpt=<student run>/checkpoints/last.ckpt out=<folder> sampler=lcm sampler.steps=4": Skip(STUDENT),
    "python train.py -m experiment=compare_variants variant=ddpm,score_sde,cond,ldm,flow,ddpm_lcm,flow_reflow": Skip(
        "seven training runs; tests/e2e/test_compare_variants.py::test_distilled_variants_join_the_comparison_next_to_"
        "their_teachers runs the distilled variants after their teachers"),
    "python sample.py from_png=samples/<run>/images/000002.png": Skip(FROM_PNG),
    "python sample.py from_png=samples/run/images/000002.png out_dir=samples/again": Skip(FROM_PNG),
    "python sample.py ckpt=... n=1 xyz='{sampler: [euler, heun], sampler.steps: [5, 10, 20]}'": Skip(XYZ),
    "python sample.py ckpt=runs/train/<run>/checkpoints/last.ckpt n=1 seed=0 xyz='{sampler: [euler, \"DPM++ 2M "
    "Karras\"], sampler.steps: [5, 10, 20], guidance_scale: [1, 4]}'": Skip(XYZ),
    "python sample.py ckpt=runs/train/film_vector/checkpoints/last.ckpt mode=img2img init_image=data/film/images/0007.png"
    " strength=0.5 n=4 \"cond={x1: 0.5, x2: 0.09, x3: 0.9, x4: 0.25}\" paste_back=true paste_back_blend=4 "
    "out_dir=samples/film_pasted": Skip("tests/unit/data/test_paste_back.py and tests/cli/test_edit_inputs.py run "
                                        "paste_back on ROI data (the film run of this page is the workflow's)"),
    "python train.py -m experiment=thinfilm_normalization data.csv=<file> data.roi=[t,l,h,w]": Skip(THINFILM),
    "python docs/examples/film_csv.py data/film_units --n 400 --kind interference": Skip(THINFILM),
    "python train.py -m experiment=thinfilm_normalization data.csv=data/film_units/film.csv data.roi=[16,8,40,80] "
    "data.resolution=16 trainer.max_steps=400": Skip(THINFILM),
}

API_TRAIN = ", ".join(f'"{o}"' for o in (*STEP, *NET, "+model.net.norm_groups=8"))
API_METRICS = ("difflab.compose([\"metrics=fast\", " + ", ".join(f'"{o}"' for o in NO_WEIGHTS)
               + '], config="evaluate").metrics')
PYTHON_BLOCKS: dict[str, Session | Skip] = {
    "README.md": Session(("grid.png",), {'difflab.train(["trainer.max_steps=2000"])': f"difflab.train([{API_TRAIN}])",
                                         'model.evaluate("fast", n=500)': f"model.evaluate({API_METRICS}, n=4)"}),
    "docs/api.md": Session(("runs/notebooks/api_samples/samples.json", "runs/notebooks/api_pipeline/model_index.json"),
                           {'"logger=csv"]': f'"logger=csv", {API_TRAIN}]',
                            'model.evaluate("fast", n=500)': f"model.evaluate({API_METRICS}, n=4)"}),
    "docs/ecosystem.md": Session(("exported/digits-ddpm/unet/config.json",), folder="ecosystem", after=(EXPORT,)),
}
COMMANDS[EXPORT].folder = "ecosystem"  # the page's Python block loads what this command wrote


def call_ok(lab: Lab, argv: list[str], folder: Path) -> None:
    answer = lab.call(argv, folder)
    assert answer["rc"] == 0, f"{argv}: exit {answer['rc']}\n{answer['stderr'][-5000:]}"


def trained(command: str, run: str = "runs/train/*"):
    """The run folder that a documented command trained."""
    def build(lab: Lab) -> Path:
        (path,) = [p for p in lab.ensure(command).glob(run)
                   if (p / "checkpoints" / "last.ckpt").is_file() and not p.is_symlink()]  # not a linked fixture
        return path
    return build



def ddpm(lab: Lab) -> Path:
    call_ok(lab, ["train.py", *DDPM, "hydra.run.dir=runs/train/ddpm"], lab.root / "fixtures")
    return lab.root / "fixtures" / "runs" / "train" / "ddpm"


def cifar10_pipeline(lab: Lab) -> Path:
    folder = lab.root / "fixtures"
    call_ok(lab, ["train.py", *DDPM, "data=cifar10", f"data.root={lab.fixture('cifar10')}",
                  "hydra.run.dir=runs/train/cifar10"], folder)
    call_ok(lab, ["export.py", "ckpt=runs/train/cifar10/checkpoints/last.ckpt", "out=exported/cifar10", "card.n=2"],
            folder)
    return folder / "exported" / "cifar10"


def shapes_conds(folder: Path) -> Path:
    """conds.csv as the page writes it: its own printf line."""
    (line,) = [x for x in shell_lines((REPO / WORKFLOW).read_text()) if x.startswith("printf ")]
    subprocess.run(["bash", "-c", line], cwd=folder, check=True)
    return folder / "conds.csv"


FIXTURES = {
    "ddpm": ddpm,
    "cond": trained("python train.py model=cond"),
    "flow": trained("python train.py model=flow scheduler.t_distribution=uniform"),
    "vae": trained(VAE_TRAIN),
    "ldm": trained(LDM_TRAIN),
    "ldm_text": trained(LDM_TEXT_TRAIN),
    "film_vector": trained(W["film_vector"], "runs/train/film_vector"),
    "film_regressor": trained(W["film_regressor"], "runs/train/film_regressor"),
    "film_images": lambda lab: lab.ensure(W["film"]) / "data" / "film" / "images",
    "pipeline": lambda lab: lab.ensure(EXPORT) / "exported" / "digits-ddpm",
    "cifar10_pipeline": cifar10_pipeline,
    "cifar10": written(from_fakes("fake_cifar")),
    "mnist": written(from_fakes("fake_mnist")),
    "sd": written(sd),
    "sdxl": written(sdxl),
    "lora_sd": trained(LORA_SD),
    "diffusers_vae": written(from_fakes("tiny_vae_folder")),
    "clip_text": written(from_fakes("tiny_clip_text_folder")),
    **{f.__name__: written(f) for f in (ffhq, celeba, thinfilm, shapes_conds, film_conds, digit_png, photo_png, prompts,
                                        captions)},
    "reference_images": written(random_pngs, "reference_images"),
    "pngs": written(random_pngs, "pngs"),
}
NEEDS = {"a GPU": torch.cuda.is_available(), "4 GPUs": torch.cuda.device_count() >= 4,
         "the FID Inception weights": INCEPTION.is_file()}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("documented_commands")
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DIFFLAB_ALLOW_DOWNLOAD")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_GIT="true", DIFFLAB_OFFLINE="1",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"), TORCH_HOME=str(root / "torch_home"))
    if INCEPTION.is_file():  # the one command that needs FID gets the real Inception weights, as a user's cache holds them
        hub = root / "torch_inception" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        (hub / "weights-inception-2015-12-05-6726825d.pth").symlink_to(INCEPTION)
    lab = Lab(root, env, COMMANDS, FIXTURES)
    lab.needs_env["the FID Inception weights"] = {"TORCH_HOME": str(root / "torch_inception")}
    yield lab
    lab.close()


def test_every_documented_command_is_classified() -> None:
    documented = documented_commands()
    missing = [f"{c}   ({', '.join(pages)})" for c, pages in documented.items() if c not in COMMANDS]
    gone = [c for c in COMMANDS if c not in documented]
    assert not missing, "documented commands missing from COMMANDS (add a Run or a Skip):\n" + "\n".join(missing)
    assert not gone, "COMMANDS entries no longer in README.md or docs/ (remove them):\n" + "\n".join(gone)
    assert len(documented) >= 100, len(documented)
    for command, entry in COMMANDS.items():
        if isinstance(entry, Skip):
            assert entry.reason.strip() and "\n" not in entry.reason, command
            continue
        split_command(command)  # a Run is a `python ...` command
        assert entry.needs is None or entry.needs in NEEDS, entry.needs
        for old in entry.subs:
            assert old in command, f"{old!r} is not in {command!r}"


def test_every_python_block_is_classified() -> None:
    blocks = python_blocks()
    assert set(blocks) == set(PYTHON_BLOCKS), (sorted(blocks), sorted(PYTHON_BLOCKS))
    for page, entry in PYTHON_BLOCKS.items():
        for old in getattr(entry, "subs", {}):
            assert old in blocks[page], f"{old!r} is no longer in the Python blocks of {page}"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first commands that use a fixture also make it
@pytest.mark.parametrize("command", list(COMMANDS), ids=[f"c{i:03d}_" + re.sub(r"\W+", "_", c.removeprefix("python "))[:60]
                                                      for i, c in enumerate(COMMANDS)])
def test_documented_command_runs(command: str, request: pytest.FixtureRequest) -> None:
    entry = COMMANDS[command]
    if isinstance(entry, Skip):
        pytest.skip(entry.reason)
    if entry.needs and not NEEDS[entry.needs]:
        pytest.skip(f"needs {entry.needs}")
    request.getfixturevalue("lab").ensure(command)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("page", list(PYTHON_BLOCKS))
def test_documented_python_runs(page: str, lab: Lab) -> None:
    entry = PYTHON_BLOCKS[page]
    if isinstance(entry, Skip):
        pytest.skip(entry.reason)
    for before in entry.after:
        lab.ensure(before)
    folder = lab.root / (entry.folder or f"py_{Path(page).stem}")
    script = folder / "session.py"
    folder.mkdir(parents=True, exist_ok=True)
    script.write_text(lab.apply(python_blocks()[page], entry.subs))
    answer = lab.call([str(script)], folder)
    assert answer["rc"] == 0, f"the Python blocks of {page}: exit {answer['rc']}\n{answer['stderr'][-5000:]}"
    for pattern in entry.expect:
        assert list(folder.glob(pattern)), f"{page}: nothing matches {pattern} in {folder}"



CONFIGS = {"train.py": "train", "sample.py": "sample", "evaluate.py": "evaluate", "export.py": "export",
           "predict.py": "predict", "compare.py": "compare", "studio.py": "studio"}
PLACEHOLDER = re.compile(r"<[^<>]*>|(?<==)\.\.\.(?=\s|$|/)|, \.\.\.(?=})")


def entry_argv(command: str) -> list[str] | None:
    """`[script, overrides...]` of a documented entry-point command as the script rewrites it (its table entry's
    substitutions that name no fixture applied, other placeholders as plain words), else None."""
    for old, new in getattr(COMMANDS.get(command), "subs", {}).items():
        command = command if fields(new) else command.replace(old, new.format())
    words = shlex.split(PLACEHOLDER.sub(lambda m: "" if m[0].startswith(",") else "placeholder", command))
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words.pop(0)
    if words[:1] != ["python"] or words[1:2] == [] or words[1] not in CONFIGS:
        return None
    if any(w.startswith("from_png=") for w in words):  # its settings are read from the image: no image, no config
        return None
    return rewrite_argv(words[1:])


def single_run(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(overrides of a sweep's first job, the config keys that `hydra.sweeper.params.<key>` searches)."""
    parser = OverridesParser.create()
    first, searched = [], []
    for text in (o for o in overrides if o not in ("-m", "--multirun")):
        override = parser.parse_override(text)
        key = override.get_key_element()
        if key.startswith("hydra.sweeper.params."):
            searched.append(key.removeprefix("hydra.sweeper.params."))
        elif override.is_choice_sweep() or override.is_range_sweep():
            first.append(f"{key}={next(override.sweep_string_iterator())}")
        elif override.is_sweep_override():  # an Optuna search space (interval, tag): the key must exist
            searched.append(key)
        else:
            first.append(text)
    return first, searched


COMPOSED = [c for c in COMMANDS if entry_argv(c)]


@pytest.mark.parametrize("command", COMPOSED, ids=[f"c{list(COMMANDS).index(c):03d}" for c in COMPOSED])
def test_documented_command_composes(command: str, tmp_path: Path) -> None:
    """Every documented entry-point command, run or skipped, composes its Hydra config with its own overrides (its
    placeholders as plain strings, a sweep's first job) and passes the start-up checks that read no file: a renamed
    key, a removed preset or option, a sampler name no longer known fails here at no cost."""
    script, *overrides = entry_argv(command)
    first, searched = single_run(overrides)
    cfg = difflab.compose(first, config=CONFIGS[script], run_dir=tmp_path)
    for key in searched:
        assert OmegaConf.select(cfg, key, default=None) is not None, f"{command}: the sweeper searches no key {key}"
    entry = COMMANDS[command]
    if "GPU" in (getattr(entry, "needs", None) or getattr(entry, "reason", "")):
        return  # the checks refuse a GPU run on a machine without one, as they should
    if script == "train.py":
        checks.train_config(cfg)
    elif cfg.get("sampler") is not None:
        checks.sampler_spec(cfg.sampler)
