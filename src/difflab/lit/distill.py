"""Distillation: a few-step student trained from a frozen teacher checkpoint, saved as an ordinary diffusion model.

`python train.py model=distill distill.method=consistency|progressive|reflow distill.teacher=<ckpt>` builds a
`DistillationModule`. The student is the teacher's own network (weights copied), preconditioning, condition and first
stage; its scheduler is the teacher's with the `trailing` grid where the scheduler offers one (a few-step grid must
start at the prior: t = 999 first), or the grid `sampler.grid` names: the recipes train on the levels of the grid the
student samples with. The teacher is read with the ordinary loader (`load_module`, EMA weights), frozen,
and kept out of the state dict; the recipes are `distill_methods.py`, their targets `difflab.diffusion.distillation`.

Every checkpoint describes the student alone: its `model` is the teacher's model config with the student's sampler
(the recipe's: LCM, DDIM or Euler at `sampler.steps` steps, 4 by default), its scheduler grid and its guidance scale (1 when the
teacher's guidance w is distilled in: the student's conditional output is the guided one), so `sample.py`,
`evaluate.py`, `export.py` and the studio load it with `load_module` like any other model. `distill` records the
recipe and the teacher; `choices.model` names the variant `<teacher's model>+<method>` (e.g. ddpm+consistency).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.diffusion.denoiser import DenoiseFn
from difflab.diffusion.guidance import guided
from difflab.diffusion.schedules import GRIDS, Scheduler
from difflab.diffusion.thresholding import threshold
from difflab.errors import ConfigError
from difflab.lit.checkpoint import load_module, read_checkpoint, require_model
from difflab.lit.diffusion import DiffusionModule
from difflab.lit.distill_methods import KEY, DistillationMethod, make_method
from difflab.lit.optim import LRSchedulerFactory, OptimizerFactory
from difflab.lit.text import TextDiffusionModule
from difflab.samplers.aliases import resolve
from difflab.samplers.generate import SamplerSpec
from difflab.utils.cluster import run_seed

TEACHER_KEY = f"{KEY}.teacher"
DATA_KEYS = ("_target_", "resolution", "channels", "num_classes", "root", "csv", "columns", "num_samples")
HOW = ("Pass distill.teacher=<the checkpoint of a diffusion or flow model, e.g. runs/train/<run>/checkpoints/last.ckpt "
       "of python train.py model=ddpm|flow|cond|cond_vector|ldm>.")


def load_teacher(path: str | None) -> DiffusionModule:
    """The frozen teacher of a distillation run: a diffusion or flow checkpoint read as sample.py reads it (EMA
    weights); a missing file, a regressor, an autoencoder or a text-conditioned model is one message naming
    `distill.teacher`."""
    if not path:
        raise ConfigError(f"Config key `{TEACHER_KEY}` is required: the model to distil. {HOW}")
    ckpt = read_checkpoint(path, key=TEACHER_KEY)
    require_model(ckpt, path, TEACHER_KEY,
                  lambda cls: issubclass(cls, DiffusionModule) and not issubclass(cls, TextDiffusionModule),
                  "a model that distillation takes (a pixel or latent diffusion or flow model, unconditional or class- "
                  "or vector-conditioned)", HOW)
    return load_module(path, use_ema=True).requires_grad_(False).eval()


def student_scheduler(scheduler: Scheduler) -> Scheduler:
    """The teacher's scheduler on the `trailing` grid where it offers one (few-step grids start at the prior)."""
    offered = getattr(type(scheduler), "grids", GRIDS)
    return scheduler.with_grid("trailing") if "trailing" in offered else scheduler


def sampler_config(spec: SamplerSpec) -> dict[str, Any]:
    """A SamplerSpec as the config node that builds it again (`conf/sampler/*.yaml`)."""
    return {"_target_": "difflab.samplers.SamplerSpec", "name": spec.name, "steps": spec.steps,
            "clip_denoised": spec.clip_denoised, "dynamic_percentile": spec.dynamic_percentile, "grid": spec.grid,
            "grid_effort": spec.grid_effort, "grid_distance": spec.grid_distance,
            "grid_inception": spec.grid_inception, **spec.knobs}


def student_spec(recipe: DistillationMethod, sampler: SamplerSpec | Mapping[str, Any] | None) -> SamplerSpec:
    """The student's default sampler: the recipe's, with the fields of `sampler` (`sampler.steps`: 4 by default;
    progressive distillation: the last stage's); a sampler of another name is a ConfigError naming `sampler`."""
    fields = dict(sampler_config(sampler) if isinstance(sampler, SamplerSpec) else (sampler or {}))
    fields.pop("_target_", None)
    own = recipe.student_sampler(1)
    name = fields.pop("name", own.name)
    if resolve(str(name))[0] != own.name:
        raise ConfigError.bad_value("sampler", f"{name}, but a student of {recipe.name} distillation samples with "
                                    f"{own.name} ({KEY}.method picks it)", "Drop sampler=...; choose another sampler "
                                    "when sampling (python sample.py ckpt=<student> sampler=...).")
    steps = fields.pop("steps", 4)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError.bad_value("sampler.steps", f"{steps!r} is not a step count >= 1",
                                    "Pass sampler.steps=1, 2 or 4: the student's default step count.")
    return SamplerSpec(own.name, steps, **{**{k: v for k, v in sampler_config(own).items()
                                               if k not in ("_target_", "name", "steps")}, **fields})


class DistillationModule(DiffusionModule):
    """A student distilled from `teacher` with the recipe `method` (options `options[method]`), sampled by default
    with `sampler`'s fields on the recipe's sampler (`student_spec`); conditional teachers are distilled at guidance
    `guidance_scale` (default: the teacher's)."""

    def __init__(self, teacher: DiffusionModule, method: str, optimizer: OptimizerFactory,
                 lr_scheduler: LRSchedulerFactory | None = None, sampler: SamplerSpec | Mapping[str, Any] | None = None,
                 guidance_scale: float | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                 scheduler: Any = None) -> None:
        if scheduler is not None:
            raise ConfigError.bad_value("scheduler", "model=distill keeps its teacher's scheduler (the student's "
                                        "sampling grid is its trailing grid where it has one)",
                                        "Drop scheduler=...; choose a grid when sampling (python sample.py "
                                        "ckpt=<student> scheduler.grid=...).")
        recipe = make_method(method, options)
        spec = student_spec(recipe, sampler)
        recipe.check_steps(int(spec.steps))
        if spec.grid == "optimized":
            raise ConfigError.bad_value("sampler.grid", "optimized is fitted to a trained model's own trajectories, "
                                        "and the student is trained on the levels of its sampling grid",
                                        "Distil on a fixed grid (e.g. sampler.grid=logsnr, or none: the trailing "
                                        "grid); sample the student with sampler.grid=optimized afterwards.")
        sched = student_scheduler(teacher.scheduler)
        spec.scheduler_for(sched)  # a `sampler.grid` the teacher's scheduler does not offer: refused before training
        conditional = teacher.condition.guided
        if guidance_scale is not None and not conditional:
            raise ConfigError.bad_value(f"{KEY}.guidance_scale", f"{guidance_scale}, but the teacher is "
                                        f"{teacher.condition.describe()}: there is no guidance to distil",
                                        f"Leave {KEY}.guidance_scale=null.")
        scale = teacher.guidance_scale if guidance_scale is None else float(guidance_scale)
        if scale < 0:
            raise ConfigError.bad_value(f"{KEY}.guidance_scale", f"{scale} is negative", "Pass w >= 0 (1: conditional).")
        net = copy.deepcopy(teacher.net).requires_grad_(True).train()
        super().__init__(net, sched, teacher.loss_fn, optimizer, teacher.image_shape,
                         lr_scheduler, sampler=spec, condition=copy.deepcopy(teacher.condition),
                         guidance_scale=1.0 if conditional else teacher.guidance_scale,
                         guidance_rescale=0.0 if conditional else teacher.guidance_rescale,
                         channels_last=teacher.channels_last, autoencoder=teacher.autoencoder)
        self.__dict__["teacher"] = teacher.requires_grad_(False).eval()  # not a submodule: not in the state dict
        self.method, self.final_steps, self.distilled_scale = recipe, int(spec.steps), scale if conditional else None
        self._pending: Mapping[str, Any] | None = None  # the recipe's state from a checkpoint, until its setup
        self._last_step, self._stages_saved = -1, False

    def at_steps(self, steps: int) -> SamplerSpec:
        """The student's sampler at another step count (progressive distillation's stages)."""
        spec = copy.copy(self.sampler)
        spec.steps = int(steps)
        return spec

    def teacher_fn(self) -> DenoiseFn:
        """The teacher as its sampler sees it: guided at the distilled scale, with the student's x0 clipping."""
        fn = self.teacher.denoiser
        if self.distilled_scale is not None and self.distilled_scale != 1.0:
            fn = guided(fn, self.distilled_scale, self.teacher.guidance_rescale, null=self.condition.null)
        return lambda x, s, c=None: self.clip(fn(x, s, c))

    def clip(self, x0: Tensor) -> Tensor:
        """x0 under the student's sampler's clipping (pixel models: [-1, 1]; latent models: none)."""
        spec = self.sampling_spec()
        return threshold(x0, spec.clip_denoised, spec.dynamic_percentile)

    def setup(self, stage: str) -> None:
        """The data must be the teacher's (shape, data set, classes); the condition keeps the teacher's state."""
        super().setup(stage)
        self._check_data()
        self.condition.load_state_dict(self.teacher.condition.state_dict())
        self.run_config = self.student_config()

    def _check_data(self) -> None:
        theirs = (self.teacher.run_config or {}).get("data") or {}
        mine = (self.run_config or {}).get("data") or {}
        differ = [k for k in DATA_KEYS if k in theirs and k in mine and theirs[k] != mine[k]]
        if not differ:
            return
        choice = ((self.teacher.run_config or {}).get("choices") or {}).get("data", "?")
        given = ", ".join(f"{k}={mine[k]!r}" for k in differ)
        keys = ["resolution"] if "_target_" in differ else differ  # another data set: its resolution, else the keys
        wanted = "".join(f" data.{k}={theirs[k]}" for k in keys if k in theirs)
        raise ConfigError.bad_value("data", f"the teacher {self.teacher.checkpoint_path} was trained on data={choice} "
                                    f"({', '.join(f'{k}={theirs[k]!r}' for k in differ)}), this run's data has {given}",
                                    f"Distil on the teacher's data: pass data={choice}{wanted}.")

    def on_fit_start(self) -> None:
        """Move the teacher to the device and set the recipe up (reflow: the teacher's pairs)."""
        super().on_fit_start()
        self.teacher.to(self.device)
        conds = None
        if self.condition.guided and getattr(self.method, "pairs", None):
            conds = self._pair_conditions(int(self.method.pairs))
        self.method.setup(self.sampler.scheduler_for(self.scheduler), self.final_steps,  # the grid it samples on
                          int(self.trainer.estimated_stepping_batches), self.teacher_fn(), self.latent_shape, conds,
                          self.device, self.loss_fn)
        if self._pending is not None:
            self.method.load_state_dict(self._pending, self.denoiser)
            self._pending = None
        self.sampler = self.at_steps(self.method.steps())

    def _pair_conditions(self, n: int) -> Tensor:
        """Conditions of n teacher samples: the condition's draws, dropped to null with its dropout probability."""
        cond = self.condition.to_net(self.condition.draw(n, getattr(self.trainer, "datamodule", None)).values)
        drop = torch.rand(n, generator=torch.Generator().manual_seed(1)) < self.condition.drop_prob
        mask = drop.reshape(-1, *([1] * (cond.ndim - 1))).to(cond.device)
        return torch.where(mask, self.condition.null(cond), cond)

    def _step_generator(self, batch_idx: int, device: torch.device) -> torch.Generator:
        """This step's generator: seeded by (run seed, step, batch index, rank)."""
        key = (run_seed() * 1_000_003 + self.trainer.global_step) * 1_000_003 + batch_idx
        return torch.Generator(device).manual_seed((key * 1_000_003 + self.trainer.global_rank) % 2**63)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One distillation step of the recipe; returns the mean loss."""
        gen = self._step_generator(batch_idx, self.device)
        x0, cond = self._inputs(batch, drop=torch.rand(len(next(iter(batch.values()))), generator=gen,
                                                       device=gen.device))
        loss = self.method.loss(self.denoiser, self.teacher_fn(), x0, cond, gen, self.clip).mean()
        self.train_images_seen += x0.shape[0] * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x0.shape[0],
                 sync_dist=self.trainer.world_size > 1)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """The recipe's loss with noise fixed per batch index."""
        x0, cond = self._inputs(batch)
        gen = torch.Generator(x0.device).manual_seed(batch_idx)
        loss = self.method.loss(self.denoiser, self.teacher_fn(), x0, cond, gen, self.clip).mean()
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After each optimizer step: the recipe's update (target network), and a finished stage's checkpoint
        (<run>/checkpoints/steps_<N>.ckpt) before the next stage starts."""
        step = self.trainer.global_step
        if step == self._last_step:  # a micro-batch of gradient accumulation
            return
        self._last_step = step
        self.method.after_step(self.denoiser, step)
        if self.method.stage_done(step):
            self._save_stage()
            self.method.advance(self.denoiser)
            self.sampler = self.at_steps(self.method.steps())

    def on_train_end(self) -> None:
        """The last stage's checkpoint too, when the recipe has stages."""
        if self._stages_saved:
            self._save_stage()

    def _save_stage(self) -> None:
        path = Path(self.trainer.default_root_dir) / "checkpoints" / f"steps_{self.method.steps()}.ckpt"
        self.trainer.save_checkpoint(path)
        self._stages_saved = True

    def student_config(self) -> dict[str, Any]:
        """The run config of the student alone (module docstring): what every checkpoint of this run stores."""
        run = copy.deepcopy(self.run_config or {})
        teacher_run = self.teacher.run_config or {}
        model = copy.deepcopy(teacher_run.get("model") or {})
        if isinstance(model.get("scheduler"), dict):
            model["scheduler"]["grid"] = self.scheduler.grid
        model["sampler"] = sampler_config(self.sampler)
        model["guidance_scale"], model["guidance_rescale"] = self.guidance_scale, self.guidance_rescale
        for key in ("optimizer", "lr_scheduler"):  # what fine-tuning the student would use: this run's
            model[key] = ((run.get("model") or {}).get(key)) or model.get(key)
        teacher_choices = dict(teacher_run.get("choices") or {})
        run.update(model=model, scheduler=model.get("scheduler"), sampler=model["sampler"])
        run["choices"] = {**(run.get("choices") or {}), "model": f"{teacher_choices.get('model', 'teacher')}+"
                          f"{self.method.name}", "sampler": self.sampler.name,
                          "scheduler": teacher_choices.get("scheduler")}
        run[KEY] = {**(run.get(KEY) or {}), "method": self.method.name, "steps": self.sampler.steps,
                    "teacher": getattr(self.teacher, "checkpoint_path", None), "teacher_choices": teacher_choices,
                    "teacher_calls_per_example": self.method.teacher_calls,
                    "guidance_scale": self.distilled_scale}
        return run

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The student's config (not the distillation run's) and the recipe's state (stage, stage teacher)."""
        self.run_config = self.student_config()
        super().on_save_checkpoint(checkpoint)
        checkpoint[f"{KEY}_state"] = self.method.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming: the weights are checked as usual; the recipe's state waits for its setup (`on_fit_start`)."""
        super().on_load_checkpoint(checkpoint)
        self._pending = checkpoint.get(f"{KEY}_state")
