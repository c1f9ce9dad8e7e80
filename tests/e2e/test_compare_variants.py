"""`python train.py -m experiment=compare_variants`, the whole five-variant comparison, at tiny size.

One sweep of the real command: five trainings (DDPM, score SDE, class-conditional with guidance, LDM with its
stage 1, flow matching) of one step each with 8-channel nets, every evaluation on 8 samples, no metric weights.
The table, the gallery and the W&B Table rows are then checked against what the runs are.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # one five-variant sweep for the module (a minute on 2 cores)
TINY = ["debug=fast", "logger=csv", "metrics.n_samples=8", "metrics.batch_size=8", "metrics.condition_accuracy=false",
        "model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_heads=1", "compare.ddim_steps=2",
        "compare.latent_scale_images=16", "compare.stage1_channels=8"]
VARIANTS = {"ddpm", "ddim", "score_sde", "cond", "ldm", "flow", "ldm autoencoder"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare_variants")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO / "src"), "TORCH_HOME": str(root / "torch")}
    env.pop("DIFFLAB_ALLOW_DOWNLOAD", None)
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "experiment=compare_variants", *TINY,
                           f"paths.root_dir={root}"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (folder,) = (root / "runs" / "train" / "multirun").iterdir()
    return folder


def rows_of(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "comparison.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(VARIANTS), [r["variant"] for r in rows]
    return {r["variant"]: r for r in rows}


def test_one_command_trains_five_variants_and_tabulates_seven_rows(sweep: Path):
    rows = rows_of(sweep)
    assert set(rows) == VARIANTS
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "checkpoints" / "last.ckpt").is_file())
    assert jobs == ["0", "1", "2", "3", "4"]  # five trainings: DDIM is no training of its own
    ddpm, ddim = rows["ddpm"], rows["ddim"]
    assert (ddim["kind"], ddim["sampler"], ddim["steps"]) == ("evaluate", "ddim", "2")
    assert Path(ddim["run_dir"]).parent == Path(ddpm["run_dir"]) and ddim["params"] == ddpm["params"]
    assert rows["flow"]["scheduler"] == "flow" and rows["flow"]["sampler"] == "euler"
    assert "guidance_scale=2" in rows["cond"]["sampler"]
    for name in VARIANTS - {"ldm autoencoder"}:
        assert rows[name]["nfe"] and rows[name]["broken_rate"] and rows[name]["kind"] != "autoencoder", rows[name]
    auto = rows["ldm autoencoder"]  # an autoencoder row: PSNR (rFID needs the Inception weights), no sample metrics
    assert auto["kind"] == "autoencoder" and float(auto["psnr"]) > 0 and auto["scheduler"] == "" and auto["nfe"] == ""
    assert Path(auto["run_dir"]).name == "stage1" and Path(auto["run_dir"]).parent == Path(rows["ldm"]["run_dir"])
    for name in ("comparison.md", "fid_vs_nfe.png", "fid_vs_samples_per_sec.png", "gallery.png"):
        assert (sweep / name).is_file(), name


def test_the_ldm_net_works_at_the_latent_resolution(sweep: Path):
    cfg = OmegaConf.load(Path(rows_of(sweep)["ldm"]["run_dir"]) / "config.yaml")
    assert (cfg.data.resolution, cfg.model.autoencoder.downsample_factor) == (16, 4)
    assert cfg.model.net.resolution == 4 and list(cfg.model.net.attention_resolutions) == [2]


def test_gallery_has_a_row_of_samples_per_sampled_variant(sweep: Path):
    from PIL import Image

    with Image.open(sweep / "gallery.png") as img:
        width, height = img.size
    strip = 8 * 16 + 9 * 2  # 8 digits of 16 px with 2 px borders, scaled by 4 to 64+ px
    assert height == 6 * 4 * (16 + 2 * 2) and width > 4 * strip  # six rows: no row for the autoencoder


def test_wandb_table_rows_carry_their_sample_grid(sweep: Path):
    import wandb

    from difflab.compare import build_table, collect_local, log_wandb_table

    logged: list[dict] = []
    log_wandb_table(build_table(collect_local(sweep)), SimpleNamespace(log=logged.append))
    table = logged[0]["comparison"]
    assert table.columns[-1] == "samples"
    images = {row[0]: row[-1] for row in table.data}
    assert all(isinstance(images[v], wandb.Image) for v in VARIANTS - {"ldm autoencoder"})
    assert images["ldm autoencoder"] is None


def test_the_sweep_end_logs_the_comparison_as_one_wandb_run(sweep: Path, monkeypatch: pytest.MonkeyPatch):
    """With `logger=wandb` in the sweep's config, CompareOnMultirunEnd sends the table (sample column), plots and
    gallery to one W&B run in the logger's project and mode (the W&B client itself is faked here)."""
    import difflab.utils.loggers as loggers
    from difflab.cli.hydra_callbacks import CompareOnMultirunEnd

    made: list[dict] = []
    logged: list[dict] = []
    run = SimpleNamespace(log=logged.append, finish=lambda: made[-1].update(finished=True))
    monkeypatch.setattr(loggers, "wandb_logger", lambda **kw: made.append(kw) or SimpleNamespace(experiment=run))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}},
                               "logger": {"wandb": {"project": "variants", "mode": "offline", "save_dir": "${oops}"}}})
    CompareOnMultirunEnd().on_multirun_end(config)
    (kw,) = made
    assert (kw["project"], kw["mode"], kw["job_type"], kw["group"]) == ("variants", "offline", "compare", sweep.name)
    assert kw.get("finished") and set(logged[0]) == {"comparison", "fid_vs_nfe", "fid_vs_samples_per_sec", "gallery"}
    assert logged[0]["comparison"].columns[-1] == "samples" and len(logged[0]["comparison"].data) == len(VARIANTS)


@pytest.mark.slow
def test_distilled_variants_join_the_comparison_next_to_their_teachers(tmp_path: Path):
    """variant=ddpm,ddpm_lcm: the second job distils the first job's checkpoint (`${sweep_checkpoint:ddpm}`), and the
    table holds the student at its own steps and at 1 step beside the DDPM and DDIM rows (default-size nets: the
    tiny-net overrides would name model.net, which a distilled variant copies from its teacher)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO / "src"), "TORCH_HOME": str(tmp_path / "torch")}
    env.pop("DIFFLAB_ALLOW_DOWNLOAD", None)
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "experiment=compare_variants",
                           "variant=ddpm,ddpm_lcm", "debug=fast", "logger=csv", "metrics.n_samples=4",
                           "metrics.batch_size=4", "compare.ddim_steps=2", f"paths.root_dir={tmp_path}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (sweep,) = (tmp_path / "runs" / "train" / "multirun").iterdir()
    with (sweep / "comparison.csv").open(newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"ddpm", "ddim", "ddpm_lcm", "ddpm_lcm_1step", "ddpm_lcm_2step"}  # a sweep's rows: variant names
    assert (rows["ddpm_lcm"]["sampler"], rows["ddpm_lcm"]["nfe"]) == ("lcm", "2")  # debug=fast: 2
    assert rows["ddpm_lcm_1step"]["nfe"] == "1" and rows["ddpm_lcm"]["params"] == rows["ddpm"]["params"]
    student = OmegaConf.load(sweep / "1" / "config.yaml")
    assert student.distill.teacher == str(sweep / "0" / "checkpoints" / "last.ckpt")
