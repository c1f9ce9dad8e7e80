"""The bad-input corpus: what users get wrong, through the real entry points.

Every case runs a real script (train.py, sample.py, evaluate.py, compare.py or a `python -m difflab...` tool)
with a mistake in its input, and must exit with status 2, print no traceback, and name the config key or file
at fault. The scripts run in children forked from one warm process (tests/cli_runner.py), so the corpus costs
one Python/torch start-up plus about a second per case; one tiny checkpoint is trained once for the module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_runner import Client

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1", "model.net.num_heads=1"]
QUICK = ["debug=fast", "logger=csv", "metrics=none", *TINY]  # a train.py that gets past its checks trains one step


class Runner(Client):
    """Sends cases to one `tests/cli_runner.py` process; each answer is (exit status, stderr)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DIFFLAB_ALLOW_DOWNLOAD")}
        env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO / "src"),
                   TORCH_HOME=str(root / "torch_home"))  # an empty hub cache: no metric weights, and no download
        super().__init__(root, env)

    def __call__(self, *argv: str, timeout: float = 120) -> tuple[int, str]:
        args = list(argv) if argv[0] == "-m" else [*argv, f"paths.root_dir={self.root}"]
        answer = self.run(args, self.root, timeout)
        return answer["rc"], answer["stderr"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[int, str]]:
    root = tmp_path_factory.mktemp("bad_inputs")
    runner = Runner(root)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def files(cli: Runner) -> dict[str, str]:
    """A tiny trained checkpoint and the bad files of the corpus."""
    from PIL import Image

    root = cli.root
    rc, err = cli("train.py", *QUICK, "paths.run_dir=" + str(root / "tiny_run"), timeout=300)
    assert rc == 0, err[-3000:]
    rc, err = cli("train.py", "model=regressor", "data=shapes", "data.resolution=8", "data.num_samples=64", "debug=fast",
                  "logger=csv", "paths.run_dir=" + str(root / "tiny_regressor"), timeout=300)
    assert rc == 0, err[-3000:]
    (root / "a_file").write_text("not a folder\n")
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("no images here\n")
    (root / "used_out").mkdir()
    (root / "used_out" / "grid.png").write_bytes(b"an earlier result")
    Image.new("RGB", (8, 8)).save(root / "picture.png")
    (root / "table.csv").write_text("filepath,a,b\npicture.png,1,2\npicture.png,3,4\n")
    (root / "broken.ipynb").write_text("{ not json")
    for part in ("unet", "scheduler"):  # the layout of a DDPM pipeline folder (without its files)
        (root / "ddpm_folder" / part).mkdir(parents=True)
    (root / "no_paths.csv").write_text("a,b\n1,2\n")
    (root / "gone_image.csv").write_text("filepath\npicture.png\nnope.png\n")
    (root / "preds.csv").write_text("an earlier result\n")
    ckpt, regressor = root / "tiny_run" / "checkpoints" / "last.ckpt", root / "tiny_regressor" / "checkpoints" / "last.ckpt"
    hostile_checkpoints(root, ckpt, regressor)
    return {"ckpt": str(ckpt), "root": str(root), "regressor": str(regressor)}


class Payload:
    """Pickled, it runs `touch <marker>` when a loader that allows code unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoints(root: Path, ckpt: Path, regressor: Path) -> None:
    """Real checkpoints whose stored configs would run code (touch <root>/payload_ran) if they were built: the
    network as `torch.load` of a pickle, as `torch.hub.load` of a local hubconf.py, the data module as os.system."""
    import pickle

    marker = root / "payload_ran"
    (root / "payload.pkl").write_bytes(pickle.dumps(Payload(marker)))
    (root / "hub").mkdir()
    (root / "hub" / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef net():\n    return None\n")
    nets = {"hostile_load": {"_target_": "torch.load", "f": str(root / "payload.pkl"), "weights_only": False},
            "hostile_hub": {"_target_": "torch.hub.load", "repo_or_dir": str(root / "hub"), "model": "net",
                            "source": "local"}}
    for name, net in nets.items():
        for base, path in ((ckpt, root / f"{name}.ckpt"), (regressor, root / f"{name}_regressor.ckpt")):
            blob = torch.load(base, weights_only=True)
            blob["config"]["model"]["net"] = net
            torch.save(blob, path)
    blob = torch.load(ckpt, weights_only=True)
    blob["config"]["data"] = {"_target_": "subprocess.run", "args": ["touch", str(marker)]}
    torch.save(blob, root / "hostile_data.ckpt")


# (name, argv with {ckpt} / {root} placeholders, strings the message must contain)
CASES = [
    # sample.py
    ("sample_without_ckpt", ["sample.py"], ["`ckpt`"]),
    ("sample_missing_ckpt", ["sample.py", "ckpt={root}/nope.ckpt"], ["nope.ckpt", "`ckpt`"]),
    ("sample_n_zero", ["sample.py", "ckpt={ckpt}", "n=0"], ["`n`"]),
    ("sample_n_negative", ["sample.py", "ckpt={ckpt}", "n=-3"], ["`n`"]),
    ("sample_n_not_a_number", ["sample.py", "ckpt={ckpt}", "n=abc"], ["`n`", "abc"]),
    ("sample_batch_size_zero", ["sample.py", "ckpt={ckpt}", "batch_size=0"], ["`batch_size`"]),
    ("sample_negative_steps", ["sample.py", "ckpt={ckpt}", "sampler=ddim", "sampler.steps=-5"], ["`sampler.steps`"]),
    ("sample_zero_steps", ["sample.py", "ckpt={ckpt}", "sampler=ddim", "sampler.steps=0"], ["`sampler.steps`"]),
    ("sample_grid_effort_not_a_number", ["sample.py", "ckpt={ckpt}", "sampler=unipc", "sampler.grid=optimized",
                                         "sampler.grid_effort=lots"], ["`sampler.grid_effort`", "not a number"]),
    ("sample_grid_effort_zero", ["sample.py", "ckpt={ckpt}", "sampler=unipc", "sampler.grid_effort=0"],
     ["`sampler.grid_effort`", "(0, 1000]"]),
    ("sample_grid_distance_unknown", ["sample.py", "ckpt={ckpt}", "sampler=unipc", "sampler.grid=optimized",
                                      "sampler.grid_distance=lpips"], ["`sampler.grid_distance`", "pixel", "inception"]),
    ("sample_grid_inception_missing", ["sample.py", "ckpt={ckpt}", "sampler=unipc", "sampler.grid=optimized",
                                       "sampler.grid_distance=inception", "sampler.grid_inception={root}/nope.pth"],
     ["nope.pth", "`sampler.grid_inception`"]),
    ("sample_unknown_sampler", ["sample.py", "ckpt={ckpt}", "sampler=dpm_9000"], ["dpm_9000", "sampler"]),
    ("sample_unknown_sampler_knob", ["sample.py", "ckpt={ckpt}", "sampler=ddim", "+sampler.etaa=0.5"],
     ["`sampler.etaa`", "sampler.eta"]),
    ("sample_unknown_schedule_type", ["sample.py", "ckpt={ckpt}", "sampler=DPM++ 2M Bogus"],
     ["`sampler`", "Bogus", "Align Your Steps"]),
    ("sample_restart_times_negative", ["sample.py", "ckpt={ckpt}", "sampler=restart", "sampler.steps=4",
                                       "sampler.restart_times=-1"], ["`sampler.restart_times`"]),
    ("sample_restart_one_level", ["sample.py", "ckpt={ckpt}", "sampler=restart", "sampler.steps=4",
                                  "sampler.restart_min=1", "sampler.restart_max=1.1"], ["`sampler.restart_max`"]),
    ("sample_dpm_adaptive_rtol_zero", ["sample.py", "ckpt={ckpt}", "sampler=dpm_adaptive", "sampler.rtol=0"],
     ["`sampler.rtol`"]),
    ("sample_dpm_fast_negative_eta", ["sample.py", "ckpt={ckpt}", "sampler=dpm_fast", "sampler.steps=4",
                                      "sampler.eta=-1"], ["`sampler.eta`"]),
    ("sample_shift_for_a_ddpm", ["sample.py", "ckpt={ckpt}", "scheduler.shift=3"], ["`scheduler.shift`", "DiscreteVPScheduler"]),
    ("sample_typo_in_key", ["sample.py", "ckpt={ckpt}", "nn=4"], ["nn"]),
    ("sample_unwritable_out_dir", ["sample.py", "ckpt={ckpt}", "out_dir={root}/a_file/out"], ["a_file/out", "`out_dir`"]),
    ("sample_out_dir_not_empty", ["sample.py", "ckpt={ckpt}", "out_dir={root}/used_out"],
     ["used_out", "`out_dir`", "overwrite=true"]),
    ("sample_unknown_precision", ["sample.py", "ckpt={ckpt}", "precision=fp64"], ["`precision`", "fp64"]),
    ("sample_img2img_without_image", ["sample.py", "ckpt={ckpt}", "mode=img2img", "n=2"], ["`init_image`"]),
    ("sample_img2img_missing_image", ["sample.py", "ckpt={ckpt}", "mode=img2img", "init_image={root}/nope.png"],
     ["nope.png", "`init_image`"]),
    ("sample_strength_above_one", ["sample.py", "ckpt={ckpt}", "mode=img2img", "init_image={root}/picture.png",
                                   "strength=1.5"], ["`strength`"]),
    ("sample_unknown_mode", ["sample.py", "ckpt={ckpt}", "mode=upscale"], ["`mode`", "upscale"]),
    ("sample_interpolate_stochastic", ["sample.py", "ckpt={ckpt}", "mode=interpolate", "n=2"], ["`sampler`"]),
    ("sample_interpolate_one_index", ["sample.py", "ckpt={ckpt}", "mode=interpolate", "sampler=ddim",
                                      "interpolate_between=[3]"], ["`interpolate_between`"]),
    ("sample_guidance_not_a_number", ["sample.py", "ckpt={ckpt}", "guidance_scale=high"], ["`guidance_scale`"]),
    ("sample_guidance_negative", ["sample.py", "ckpt={ckpt}", "guidance_scale=-3"], ["`guidance_scale`", "-3"]),
    ("sample_guidance_rescale_above_one", ["sample.py", "ckpt={ckpt}", "guidance_rescale=2"], ["`guidance_rescale`"]),
    ("sample_n_beyond_memory", ["sample.py", "ckpt={ckpt}", "n=1e12"], ["`n`", "GiB"]),
    ("sample_resume_nothing_to_continue", ["sample.py", "ckpt={ckpt}", "resume=true", "out_dir={root}/no_images"],
     ["`resume`", "no_images"]),
    ("sample_steps_of_the_own_sampler_below_one", ["sample.py", "ckpt={ckpt}", "sampler.steps=0"], ["`sampler.steps`"]),
    ("sample_negative_seed", ["sample.py", "ckpt={ckpt}", "seed=-5"], ["`seed`"]),
    ("sample_seed_not_a_number", ["sample.py", "ckpt={ckpt}", "seed=abc"], ["`seed`"]),
    ("sample_sweep_without_vectors", ["sample.py", "ckpt={ckpt}", "sweep={{x3: [0, 1, 9]}}"], ["`sweep`", "unconditional"]),
    ("sample_regressor_without_vectors", ["sample.py", "ckpt={ckpt}", "regressor={regressor}"],
     ["`regressor`", "unconditional"]),
    ("sample_a_regressor_checkpoint", ["sample.py", "ckpt={regressor}", "n=2"], ["`ckpt`", "model=regressor",
                                                                                "generates images"]),
    # predict.py
    ("predict_without_ckpt", ["predict.py", "images={root}/no_images"], ["`ckpt`"]),
    ("predict_diffusion_checkpoint", ["predict.py", "ckpt={ckpt}", "images={root}/no_images"],
     ["`ckpt`", "model=ddpm", "not a condition regressor", "model=regressor"]),
    ("predict_missing_ckpt", ["predict.py", "ckpt={root}/nope.ckpt", "images={root}/no_images"], ["nope.ckpt", "`ckpt`"]),
    ("predict_without_images", ["predict.py", "ckpt={regressor}"], ["`images`"]),
    ("predict_missing_folder", ["predict.py", "ckpt={regressor}", "images={root}/nope"], ["nope", "`images`"]),
    ("predict_folder_without_images", ["predict.py", "ckpt={regressor}", "images={root}/no_images"],
     ["no_images", "`images`"]),
    ("predict_images_not_a_folder_or_csv", ["predict.py", "ckpt={regressor}", "images={root}/a_file"],
     ["a_file", "`images`"]),
    ("predict_csv_without_path_column", ["predict.py", "ckpt={regressor}", "images={root}/no_paths.csv"],
     ["no_paths.csv", "`path_column`"]),
    ("predict_csv_missing_image", ["predict.py", "ckpt={regressor}", "images={root}/gone_image.csv"],
     ["nope.png", "row 3", "`images`"]),
    ("predict_path_column_for_a_folder", ["predict.py", "ckpt={regressor}", "images={root}/no_images",
                                          "path_column=file"], ["`path_column`"]),
    ("predict_out_exists", ["predict.py", "ckpt={regressor}", "images={root}/gone_image.csv", "out={root}/preds.csv"],
     ["preds.csv", "`out`", "overwrite=true"]),
    ("predict_unwritable_out", ["predict.py", "ckpt={regressor}", "images={root}/no_images", "out={root}/a_file/p.csv"],
     ["a_file", "`out`"]),
    ("predict_unknown_preprocess", ["predict.py", "ckpt={regressor}", "images={root}/no_images", "preprocess=roi"],
     ["`preprocess`", "roi"]),
    ("predict_batch_size_zero", ["predict.py", "ckpt={regressor}", "images={root}/no_images", "batch_size=0"],
     ["`batch_size`"]),
    # evaluate.py
    ("evaluate_nothing_to_score", ["evaluate.py"], ["`ckpt`", "`images`"]),
    ("evaluate_ckpt_and_images", ["evaluate.py", "ckpt={ckpt}", "images={root}/no_images"], ["`ckpt`", "`images`"]),
    ("evaluate_missing_images", ["evaluate.py", "images={root}/nope", "data=digits"], ["nope", "`images`"]),
    ("evaluate_folder_without_images", ["evaluate.py", "images={root}/no_images", "data=digits"],
     ["no_images", "`images`"]),
    ("evaluate_n_samples_zero", ["evaluate.py", "ckpt={ckpt}", "n_samples=0"], ["`n_samples`"]),
    ("evaluate_images_with_metrics_none", ["evaluate.py", "images={root}/used_out", "data=digits", "metrics=none"],
     ["`metrics`", "metrics=fast"]),
    ("evaluate_resume_into_a_fresh_folder", ["evaluate.py", "ckpt={ckpt}", "resume=true", "out_dir={root}/no_images"],
     ["`resume`", "no_images"]),
    ("evaluate_batch_size_zero", ["evaluate.py", "ckpt={ckpt}", "batch_size=0"], ["`batch_size`"]),
    ("evaluate_missing_prompts", ["evaluate.py", "ckpt={ckpt}", "prompts={root}/nope.txt"], ["nope.txt", "`prompts`"]),
    ("evaluate_out_dir_not_empty", ["evaluate.py", "ckpt={ckpt}", "out_dir={root}/used_out"],
     ["used_out", "overwrite=true"]),
    ("evaluate_missing_inception", ["evaluate.py", "ckpt={ckpt}", "n_samples=4", "logger=csv"],
     ["weights-inception-2015-12-05-6726825d.pth", "`metrics.weights.inception`", "DIFFLAB_ALLOW_DOWNLOAD=1"]),
    ("evaluate_unknown_data_set", ["evaluate.py", "ckpt={ckpt}", "data=imagenet_9000"], ["imagenet_9000"]),
    # compare.py
    ("compare_missing_runs_dir", ["compare.py", "runs_dir={root}/nope"], ["nope", "`runs_dir`"]),
    ("compare_unwritable_out_dir", ["compare.py", "out_dir={root}/a_file/x"], ["a_file/x", "`out_dir`"]),
    # studio.py (each stops before Gradio loads)
    ("studio_missing_runs_dir", ["studio.py", "runs_dir={root}/nope"], ["nope", "`runs_dir`"]),
    ("studio_missing_ckpt_dir", ["studio.py", "ckpt_dirs=[{root}/nope]"], ["nope", "`ckpt_dirs`"]),
    ("studio_port_not_a_number", ["studio.py", "port=web"], ["`port`", "web"]),
    ("studio_port_too_large", ["studio.py", "port=70000"], ["`port`", "70000"]),
    ("studio_host_not_here", ["studio.py", "host=192.0.2.1", "port=0"], ["`host`", "192.0.2.1", "host=127.0.0.1"]),
    ("studio_max_models_zero", ["studio.py", "max_models=0"], ["`max_models`"]),
    ("studio_unwritable_out_dir", ["studio.py", "out_dir={root}/a_file/x"], ["a_file/x", "`out_dir`"]),
    # train.py (each would train one step if it got past its check)
    ("train_resolution_18", ["train.py", "debug=fast", "logger=csv", "metrics=none", "data.resolution=18"], ["`data.resolution`", "data.resolution=16 or 20"]),
    ("train_unknown_model", ["train.py", "model=ddpm_9000"], ["ddpm_9000"]),
    ("train_sampler_own", ["train.py", *QUICK, "sampler=own"], ["`sampler`", "own"]),
    ("train_image_folder_without_root", ["train.py", *QUICK, "data=image_folder"], ["`data.root`"]),
    ("train_image_folder_without_images", ["train.py", *QUICK, "data=image_folder", "data.root={root}/no_images"],
     ["no_images", "`data.root`"]),
    ("train_csv_missing_file", ["train.py", *QUICK, "model=cond_vector", "data=csv", "data.csv={root}/nope.csv",
                                "data.columns=[a,b]"], ["nope.csv", "`data.csv`"]),
    ("train_csv_without_the_columns", ["train.py", *QUICK, "model=cond_vector", "data=csv", "data.csv={root}/table.csv",
                                       "data.columns=[x1,x2]", "data.resolution=8"], ["`data.columns`", "table.csv"]),
    ("train_fp16_on_cpu", ["train.py", *QUICK, "trainer=cpu", "trainer.precision=16-mixed"], ["`trainer.precision`"]),
    ("train_negative_steps", ["train.py", *QUICK, "sampler.steps=-1"], ["`sampler.steps`"]),
    ("train_unknown_sampler_knob", ["train.py", *QUICK, "sampler=ddim", "+sampler.etta=1"], ["`sampler.etta`"]),
    ("train_unwritable_run_dir", ["train.py", *QUICK, "paths.run_dir={root}/a_file/run"], ["a_file/run", "`paths.run_dir`"]),
    ("train_max_steps_not_a_number", ["train.py", *QUICK, "trainer.max_steps=lots"], ["`trainer.max_steps`"]),
    ("train_negative_lr", ["train.py", *QUICK, "model.optimizer.lr=-1"], ["`model.optimizer.lr`"]),
    ("train_batch_size_zero", ["train.py", *QUICK, "data.batch_size=0"], ["`data.batch_size`"]),
    ("train_bad_seed", ["train.py", *QUICK, "seed=-7"], ["`seed`"]),
    ("train_flow_unknown_t_distribution", ["train.py", *QUICK, "model=flow", "scheduler.t_distribution=nope"],
     ["`scheduler.t_distribution`", "logit_normal"]),
    ("train_flow_negative_logit_std", ["train.py", *QUICK, "model=flow", "scheduler.logit_std=-0.5"],
     ["`scheduler.logit_std`"]),
    ("train_flow_t_max_one", ["train.py", *QUICK, "model=flow", "scheduler.t_max=1.0"], ["`scheduler.t_min`", "t_max"]),
    ("train_flow_timestep_grid", ["train.py", *QUICK, "model=flow", "sampler.grid=trailing"], ["`sampler.grid`", "uniform"]),
    ("train_ays_outside_the_noise_range", ["train.py", *QUICK, "scheduler=edm", "scheduler.sigma_max=10",
                                           "sampler=euler", "sampler.steps=4", "sampler.grid=Align Your Steps"],
     ["`sampler.grid`", "ays", "karras"]),
    ("train_simple_grid_on_a_continuous_scheduler", ["train.py", *QUICK, "model=flow", "sampler.grid=Simple"],
     ["`sampler.grid`", "simple", "uniform"]),
    ("train_scheduler_unknown_option", ["train.py", *QUICK, "scheduler=flow", "+scheduler.shfit=3"], ["`scheduler`", "shfit"]),
    ("train_also_sample_unknown_sampler", ["train.py", *QUICK, "+metrics.also_sample.x={{name: dpm_9000}}"],
     ["`metrics.also_sample.x`", "dpm_9000"]),
    ("train_also_sample_not_a_sampler", ["train.py", *QUICK, "+metrics.also_sample.x=5"], ["`metrics.also_sample.x`"]),
    ("train_unknown_variant", ["train.py", *QUICK, "variant=ddpm_9000"], ["ddpm_9000"]),
    ("train_resume_missing_ckpt", ["train.py", *QUICK, "ckpt_path={root}/gone.ckpt"], ["gone.ckpt", "`ckpt_path`"]),
    ("train_unknown_hparams_search", ["train.py", "hparams_search=nope"], ["hparams_search/nope", "optuna"]),
    ("train_optimized_metric_without_metric_pass", ["train.py", *QUICK, "optimized_metric=val/fid"],
     ["`optimized_metric`", "metrics=none"]),
    ("train_optimized_metric_never_validated", ["train.py", *QUICK, "optimized_metric=val/loss", "trainer.max_steps=3",
                                                "trainer.val_check_interval=5"], ["`optimized_metric`", "val_check_interval"]),
    # a checkpoint's stored config that would run code: refused by name, on every command that loads one
    ("sample_ckpt_config_torch_load", ["sample.py", "ckpt={root}/hostile_load.ckpt", "n=1"],
     ["hostile_load.ckpt", "`ckpt`", "`_target_: torch.load` at model.net", "nothing of it was run"]),
    ("sample_ckpt_config_torch_hub", ["sample.py", "ckpt={root}/hostile_hub.ckpt", "n=1"],
     ["hostile_hub.ckpt", "`_target_: torch.hub.load` at model.net"]),
    ("export_ckpt_config_torch_load", ["export.py", "ckpt={root}/hostile_load.ckpt", "out={root}/export_h1"],
     ["hostile_load.ckpt", "`_target_: torch.load` at model.net"]),
    ("export_ckpt_config_torch_hub", ["export.py", "ckpt={root}/hostile_hub.ckpt", "out={root}/export_h2"],
     ["hostile_hub.ckpt", "`_target_: torch.hub.load` at model.net"]),
    ("evaluate_ckpt_config_torch_hub", ["evaluate.py", "ckpt={root}/hostile_hub.ckpt", "metrics=fast",
                                        "out_dir={root}/eval_h1"], ["hostile_hub.ckpt", "`_target_: torch.hub.load`"]),
    ("evaluate_ckpt_data_config_subprocess", ["evaluate.py", "ckpt={root}/hostile_data.ckpt", "metrics=fast",
                                              "n_samples=2", "out_dir={root}/eval_h2"],
     ["hostile_data.ckpt", "`_target_: subprocess.run` at data"]),
    ("sample_img2img_data_config_subprocess", ["sample.py", "ckpt={root}/hostile_data.ckpt", "mode=img2img", "n=1",
                                               "init_image={root}/picture.png", "out_dir={root}/sample_h3"],
     ["hostile_data.ckpt", "`_target_: subprocess.run` at data"]),
    ("predict_ckpt_config_torch_load", ["predict.py", "ckpt={root}/hostile_load_regressor.ckpt",
                                        "images={root}/no_images"], ["hostile_load_regressor.ckpt", "`_target_: torch.load`"]),
    # export.py
    ("export_without_ckpt", ["export.py", "out={root}/export_a"], ["`ckpt`"]),
    ("export_missing_ckpt", ["export.py", "ckpt={root}/nope.ckpt", "out={root}/export_b"], ["nope.ckpt", "`ckpt`"]),
    ("export_unknown_format", ["export.py", "ckpt={ckpt}", "format=onnx", "out={root}/export_c"], ["`format`", "onnx"]),
    ("export_out_not_empty", ["export.py", "ckpt={ckpt}", "out={root}/used_out"], ["used_out", "`out`", "overwrite=true"]),
    ("export_net_without_diffusers_equivalent", ["export.py", "ckpt={ckpt}", "out={root}/export_d"],
     ["`model.net.norm_groups`", "[8, 16, 24]"]),  # the tiny net's channel counts that 32 groups do not divide
    # model=diffusers (a diffusers UNet2DModel pipeline folder)
    ("sample_diffusers_without_path", ["sample.py", "model=diffusers"], ["`pipeline.path`"]),
    ("sample_diffusers_not_a_pipeline", ["sample.py", "model=diffusers", "pipeline.path={root}/no_images"],
     ["no_images", "`pipeline.path`", "model_index.json", "save_pretrained"]),
    ("sample_diffusers_missing_folder", ["sample.py", "model=diffusers", "pipeline.path={root}/nope_pipeline"],
     ["nope_pipeline", "`pipeline.path`"]),
    ("sample_sd_given_a_ddpm_folder", ["sample.py", "model=sd", "pipeline.path={root}/ddpm_folder"],
     ["ddpm_folder", "model=diffusers"]),
    ("train_wandb_log_model_not_a_bool", ["train.py", *QUICK, "logger=wandb", "logger.wandb.log_model=maybe"],
     ["`logger.wandb.log_model`", "maybe"]),
    ("train_regressor_without_vectors", ["train.py", "model=regressor", "debug=fast", "logger=csv"],
     ["`model.net.outputs`", "data=shapes"]),
    ("train_regressor_with_sample_metrics", ["train.py", "model=regressor", "data=shapes", "data.resolution=8",
                                             "data.num_samples=64", "debug=fast", "logger=csv", "metrics=fast"],
     ["`metrics`", "metrics=none"]),
    # python -m tools
    ("notebooks_missing_file", ["-m", "difflab.utils.notebooks", "check", "{root}/nope.ipynb"], ["nope.ipynb"]),
    ("notebooks_not_json", ["-m", "difflab.utils.notebooks", "check", "{root}/broken.ipynb"], ["broken.ipynb"]),
    ("prepare_captions_missing_source", ["-m", "difflab.cli.prepare_captions", "{root}/no_captions", "--out",
                                         "{root}/clean.jsonl"], ["no_captions"]),
]
if not torch.cuda.is_available():
    CASES += [
        ("sample_fp16_on_cpu", ["sample.py", "ckpt={ckpt}", "precision=fp16", "device=cpu"], ["`precision`"]),
        ("sample_cuda_without_gpu", ["sample.py", "ckpt={ckpt}", "device=cuda"], ["`device`"]),
        ("train_gpu_without_gpu", ["train.py", *QUICK, "trainer.accelerator=gpu"], ["`trainer.accelerator`"]),
    ]


@pytest.mark.parametrize("name,argv,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_message_and_status_2(cli: Runner, files: dict[str, str], name: str,
                                                      argv: list[str], needles: list[str]) -> None:
    rc, err = cli(*(a.format(**files) for a in argv))
    assert "Traceback" not in err, err[-3000:]
    assert rc == 2, f"exit status {rc}:\n{err[-3000:]}"
    for needle in needles:
        assert needle.format(**files) in err, f"{needle!r} not in:\n{err[-2000:]}"


def test_no_hostile_checkpoint_ran_its_payload(cli: Runner, files: dict[str, str]) -> None:
    for name in ("hostile_load", "hostile_hub", "hostile_data"):
        cli("sample.py", f"ckpt={files['root']}/{name}.ckpt", "n=1", f"out_dir={files['root']}/ran_{name}")
    assert not (Path(files["root"]) / "payload_ran").exists()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_overwrite_true_writes_into_a_used_folder_and_a_fresh_folder_needs_nothing(cli: Runner, files: dict[str, str]) -> None:
    root = Path(files["root"])
    rc, err = cli("sample.py", f"ckpt={files['ckpt']}", "n=2", "sampler=ddim", "sampler.steps=2",
                  f"out_dir={root}/used_out", "overwrite=true")
    assert rc == 0, err[-3000:]
    assert (root / "used_out" / "images" / "000001.png").is_file()
    rc, err = cli("sample.py", f"ckpt={files['ckpt']}", "n=2", "sampler=ddim", "sampler.steps=2", f"out_dir={root}/fresh")
    assert rc == 0, err[-3000:]
    assert json.loads((root / "fresh" / "samples.json").read_text())["n"] == 2
