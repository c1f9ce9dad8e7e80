"""`${sweep_checkpoint:<variant>}`: a distilled variant of experiment=compare_variants finds its teacher's job."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from difflab.errors import ConfigError
from difflab.utils.config import sweep_checkpoint


def job(sweep: Path, num: int, variant: str, finished: bool = True) -> Path:
    folder = sweep / str(num)
    (folder / "checkpoints").mkdir(parents=True)
    OmegaConf.save({"choices": {"variant": variant, "model": variant}}, folder / "config.yaml")
    if finished:
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    return folder / "checkpoints" / "last.ckpt"


def test_the_finished_job_of_the_variant_is_the_teacher(tmp_path):
    job(tmp_path, 0, "score_sde")
    ddpm = job(tmp_path, 1, "ddpm")
    job(tmp_path, 2, "flow", finished=False)
    assert sweep_checkpoint("ddpm", tmp_path) == str(ddpm)
    with pytest.raises(ConfigError, match="`distill.teacher`: the sweep .* has no finished variant=flow job"):
        sweep_checkpoint("flow", tmp_path)
    with pytest.raises(ConfigError, match="variant=cond,<distilled variant>"):
        sweep_checkpoint("cond", tmp_path)


def test_outside_a_multirun_it_says_so():
    with pytest.raises(ConfigError, match="needs a multirun"):
        sweep_checkpoint("ddpm")
