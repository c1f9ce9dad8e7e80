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
from PIL import Image

from difflab.data.shapes import ATTRIBUTES
from difflab.utils.files import temp_name_pattern

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # ~190 cases at about a second each (3 minutes): the whole suite runs them, not the fast lane
CONV_IN = "denoiser.net.conv_in.weight"
TINY = ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1", "model.net.num_heads=1"]
QUICK = ["debug=fast", "logger=csv", "metrics=none", *TINY]  # a train.py that gets past its checks trains one step
DISTILL = ["debug=fast", "logger=csv", "metrics=none", "model=distill"]  # distils {ckpt} unless told otherwise


class Runner(Client):
    """Sends cases to one `tests/cli_runner.py` process; each answer is (exit status, stderr)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DIFFLAB_ALLOW_DOWNLOAD")}
        env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO / "src"),
                   TORCH_HOME=str(root / "torch_home"))  # an empty hub cache: no metric weights, and no download
        super().__init__(root, env)

    def __call__(self, *argv: str, timeout: float = 120, patch: str | None = None) -> tuple[int, str]:
        answer = self.answer(*argv, timeout=timeout, patch=patch)
        return answer["rc"], answer["stderr"]

    def answer(self, *argv: str, timeout: float = 120, patch: str | None = None) -> dict:
        """{"rc", "stdout", "stderr"} of one case (`patch="enospc"`: on a simulated full disk, tests/cli_runner.py)."""
        args = list(argv) if argv[0] == "-m" else [*argv, f"paths.root_dir={self.root}"]
        return self.run(args, self.root, timeout, patch=patch)


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
    rc, err = cli("train.py", "model=vae", *QUICK, "paths.run_dir=" + str(root / "tiny_vae"), timeout=300)
    assert rc == 0, err[-3000:]
    (root / "a_file").write_text("not a folder\n")
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("no images here\n")
    (root / "used_out").mkdir()
    (root / "used_out" / "grid.png").write_bytes(b"an earlier result")
    Image.new("RGB", (8, 8)).save(root / "picture.png")
    (root / "gray_images").mkdir()
    for i in range(4):
        Image.new("L", (16, 16), color=40 * i).save(root / "gray_images" / f"{i}.png")
    (root / "table.csv").write_text("filepath,a,b\npicture.png,1,2\npicture.png,3,4\n")
    (root / "broken.ipynb").write_text("{ not json")
    for part in ("unet", "scheduler"):  # the layout of a DDPM pipeline folder (without its files)
        (root / "ddpm_folder" / part).mkdir(parents=True)
    (root / "no_paths.csv").write_text("a,b\n1,2\n")
    (root / "gone_image.csv").write_text("filepath\npicture.png\nnope.png\n")
    (root / "preds.csv").write_text("an earlier result\n")
    ckpt, regressor = root / "tiny_run" / "checkpoints" / "last.ckpt", root / "tiny_regressor" / "checkpoints" / "last.ckpt"
    hostile_checkpoints(root, ckpt, regressor)
    rc, err = cli("train.py", *QUICK, "model=cond_vector", "data=shapes", "data.resolution=8", "data.num_samples=64",
                  "model.net.emb_channels=32", "paths.run_dir=" + str(root / "tiny_vector"), timeout=300)
    assert rc == 0, err[-3000:]
    damaged_files(root, ckpt)
    stable_diffusion_folders(root)
    return {"ckpt": str(ckpt), "root": str(root), "regressor": str(regressor),
            "vae": str(root / "tiny_vae" / "checkpoints" / "last.ckpt"),
            "vector": str(root / "tiny_vector" / "checkpoints" / "last.ckpt"),
            "huge_cond": "{" + ", ".join(f"{c}: {1e39 if c == 'size' else 0.5}" for c in ATTRIBUTES) + "}"}


def damaged_files(root: Path, ckpt: Path) -> None:
    """Checkpoints with NaN, bit-flipped and huge weights, bad CSV tables, outputs that are no regular file, an earlier
    comparison, and metrics.json files that are no records."""
    for name, change in (("nan_weights", lambda b: b["state_dict"][CONV_IN].view(-1)[:3].fill_(float("nan"))),
                         ("bitflip", lambda b: b["ema"]["params"][CONV_IN].view(torch.int32).view(-1)[:1].bitwise_or_(0x7F800000)),
                         ("huge_weights", lambda b: b["ema"]["params"][CONV_IN].view(torch.int32).bitwise_xor_(1 << 30)),
                         ("no_config", lambda b: b.pop("config"))):
        blob = torch.load(ckpt, weights_only=True)
        change(blob)
        torch.save(blob, root / f"{name}.ckpt")
    header = ",".join(ATTRIBUTES)
    (root / "cond_ten_values.csv").write_text(f"{header}\n" + ",".join(["0.5"] * 10) + "\n")
    (root / "cond_twice.csv").write_text("cx,cx\n0.5,0.5\n")
    (root / "pics").mkdir()
    Image.new("RGB", (8, 8), (200, 50, 50)).save(root / "pics" / "red.png")
    (root / "same_column.csv").write_text("filepath,a,a\npics/red.png,1,2\npics/red.png,3,4\n")
    (root / "real_preds.csv").write_text("an earlier result\n")
    (root / "linked_preds.csv").symlink_to(root / "real_preds.csv")
    good = {"kind": "evaluate", "variant": "ddpm", "values": {"fid": 9.5}, "sampler": {"name": "ddim", "steps": 10}}
    for name, record in (("good", good), ("protocol_x", {**good, "protocol": "x"}),
                         ("name_list", {**good, "sampler": {"name": ["ddim"], "steps": 10}})):
        (root / "cmp_runs" / name).mkdir(parents=True)
        (root / "cmp_runs" / name / "metrics.json").write_text(json.dumps(record))
    (root / "cmp_used").mkdir()
    (root / "cmp_used" / "comparison.md").write_text("an earlier comparison\n")


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


def stable_diffusion_folders(root: Path) -> None:
    """A tiny random SD folder (sd/), an SDXL folder without its second text encoder (sdxl_broken/), 8 uncaptioned
    16-pixel images (plain_images/) and 8 captioned ones (sd_pairs/)."""
    import shutil

    from fakes import tiny_sd_pipeline, tiny_sdxl_pipeline
    from PIL import Image

    tiny_sd_pipeline().save_pretrained(root / "sd")
    tiny_sdxl_pipeline().save_pretrained(root / "sdxl_broken")
    shutil.rmtree(root / "sdxl_broken" / "text_encoder_2")
    (root / "plain_images").mkdir()
    (root / "sd_pairs").mkdir()
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 0, 0)).save(root / "plain_images" / f"{i}.png")
        Image.new("RGB", (16, 16), (0, 30 * i, 0)).save(root / "sd_pairs" / f"{i}.png")
        (root / "sd_pairs" / f"{i}.txt").write_text(f"a green square {i}\n")


SD = ["sample.py", "model=sd", "pipeline.path={root}/sd", "steps=1", "n=1"]
LORA = ["train.py", "model=lora", "debug=fast", "logger=csv"]

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
    ("sample_lora_missing_file", ["sample.py", "ckpt={ckpt}", "lora=[{root}/nope.safetensors:0.8]"],
     ["nope.safetensors", "`lora`"]),
    ("evaluate_lora_missing_file", ["evaluate.py", "ckpt={ckpt}", "lora=[{root}/nope.safetensors:0.8]"],
     ["nope.safetensors", "`lora`"]),
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
    # sample.py from_png= / xyz= / paste_back=
    ("sample_from_png_missing", ["sample.py", "from_png={root}/nope.png"], ["nope.png", "`from_png`"]),
    ("sample_from_png_without_parameters", ["sample.py", "ckpt={ckpt}", "from_png={root}/picture.png"],
     ["picture.png", "`from_png`", "`parameters`"]),
    ("sample_from_png_not_an_image", ["sample.py", "from_png={root}/a_file"], ["a_file", "`from_png`", "not an image"]),
    ("sample_xyz_not_a_mapping", ["sample.py", "ckpt={ckpt}", "xyz=5"], ["`xyz`", "mapping"]),
    ("sample_xyz_unknown_key", ["sample.py", "ckpt={ckpt}", "xyz={{nope: [1, 2]}}"], ["`xyz`", "'nope'"]),
    ("sample_xyz_output_key", ["sample.py", "ckpt={ckpt}", "xyz={{out_dir: [a, b]}}"], ["`xyz`", "'out_dir'"]),
    ("sample_xyz_values_not_a_list", ["sample.py", "ckpt={ckpt}", "xyz={{guidance_scale: 3}}"],
     ["`xyz`", "guidance_scale", "not a list"]),
    ("sample_xyz_four_axes", ["sample.py", "ckpt={ckpt}", "xyz={{n: [1], seed: [1], strength: [0.5], prompt: [a]}}"],
     ["`xyz`", "at most three"]),
    ("sample_xyz_bad_value", ["sample.py", "ckpt={ckpt}", "xyz={{guidance_scale: [1, high]}}"],
     ["`xyz` cell guidance_scale=high", "`guidance_scale`"]),
    ("sample_xyz_unknown_sampler", ["sample.py", "ckpt={ckpt}", "xyz={{sampler: [euler, dpm_9000]}}"],
     ["`xyz` cell sampler=dpm_9000", "dpm_9000"]),
    ("sample_xyz_resume", ["sample.py", "ckpt={ckpt}", "xyz={{seed: [1, 2]}}", "resume=true"], ["`resume`", "xyz"]),
    ("sample_paste_back_without_an_edit", ["sample.py", "ckpt={ckpt}", "paste_back=true"],
     ["`paste_back`", "mode=img2img"]),
    ("sample_paste_back_not_a_bool", ["sample.py", "ckpt={ckpt}", "paste_back=maybe"], ["`paste_back`", "maybe"]),
    ("sample_paste_back_without_roi_data", ["sample.py", "ckpt={ckpt}", "mode=img2img", "init_image={root}/picture.png",
                                            "paste_back=true", "n=1", "out_dir={root}/paste_no_roi"],
     ["`paste_back`", "data.roi"]),
    ("sample_paste_back_negative_blend", ["sample.py", "ckpt={ckpt}", "mode=img2img", "init_image={root}/picture.png",
                                          "paste_back=true", "paste_back_blend=-2"], ["`paste_back_blend`"]),
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
    ("train_channels_last_not_a_setting", ["train.py", *QUICK, "model.channels_last=maybe"], ["`model.channels_last`", "auto"]),
    ("train_compile_sampling_not_a_switch", ["train.py", *QUICK, "model.compile_sampling=sometimes"],
     ["`model.compile_sampling`"]),
    ("train_compile_not_a_switch", ["train.py", *QUICK, "model.compile=yes"], ["`model.compile`"]),
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
    ("train_thinfilm_normalization_without_csv", ["train.py", "experiment=thinfilm_normalization"], ["`data.csv`"]),
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
    # SDXL, the prompt language, LoRA training (the `lora=` sampling key: tests/unit/lit/test_lora.py until the API
    # passes it to difflab.lit.lora.apply_loras)
    ("sample_sdxl_folder_missing_a_part", ["sample.py", "model=sd", "pipeline.path={root}/sdxl_broken"],
     ["sdxl_broken", "SDXL", "lacks text_encoder_2/", "`pipeline.path`"]),
    ("sample_malformed_prompt_editing", [*SD, "prompt=a [cat:dog:half] in a park"],
     ["`prompt`", "[cat:dog:half]", "not a number", r"a \[cat:dog:half\] in a park"]),
    ("sample_malformed_negative_prompt_editing", [*SD, "prompt=a cat", "negative_prompt=[a:b:c]"],
     ["`negative_prompt`", "[a:b:c]"]),
    ("sample_size_ids_on_sd1", [*SD, "prompt=a cat", "pipeline.original_size=512"],
     ["`pipeline.original_size`", "no size conditioning"]),
    ("train_lora_without_base", LORA, ["`base`"]),
    ("train_lora_missing_base", [*LORA, "base={root}/nope_base"], ["nope_base", "`base`"]),
    ("train_lora_zero_rank", [*LORA, "base={root}/sd", "model.rank=0"], ["`model.rank`"]),
    ("train_lora_uncaptioned_images", [*LORA, "base={root}/sd", "data=image_folder", "data.root={root}/plain_images",
                                       "data.resolution=16"], ["`caption`", "data=image_text"]),
    ("train_lora_caption_beside_captions", [*LORA, "base={root}/sd", "data=image_text", "data.root={root}/sd_pairs",
                                            "data.resolution=16", "caption=a cat"], ["`caption`", "data=image_text"]),
    ("train_lora_caption_for_an_unconditional_base", [*LORA, "base={ckpt}", "caption=a cat"],
     ["`caption`", "unconditional"]),
    ("train_wandb_log_model_not_a_bool", ["train.py", *QUICK, "logger=wandb", "logger.wandb.log_model=maybe"],
     ["`logger.wandb.log_model`", "maybe"]),
    ("train_regressor_without_vectors", ["train.py", "model=regressor", "debug=fast", "logger=csv"],
     ["`model.net.outputs`", "data=shapes"]),
    ("train_regressor_with_sample_metrics", ["train.py", "model=regressor", "data=shapes", "data.resolution=8",
                                             "data.num_samples=64", "debug=fast", "logger=csv", "metrics=fast"],
     ["`metrics`", "metrics=none"]),
    # train.py model=distill: the teacher and the distillation options
    ("ldm_first_stage_of_another_factor", ["train.py", *QUICK, "model=ldm", "model.autoencoder.ckpt={vae}",
                                           "model.autoencoder.downsample_factor=4"],
     ["`model.autoencoder.downsample_factor`", "model.autoencoder.downsample_factor=2"]),
    ("distill_without_teacher", ["train.py", *DISTILL], ["`distill.teacher`", "required"]),
    ("distill_missing_teacher", ["train.py", *DISTILL, "distill.teacher={root}/nope.ckpt"],
     ["nope.ckpt", "`distill.teacher`"]),
    ("distill_teacher_not_a_checkpoint", ["train.py", *DISTILL, "distill.teacher={root}/table.csv"],
     ["table.csv", "`distill.teacher`"]),
    ("distill_a_regressor", ["train.py", *DISTILL, "distill.teacher={regressor}"],
     ["`distill.teacher`", "model=regressor", "diffusion or flow model"]),
    ("distill_an_autoencoder", ["train.py", *DISTILL, "distill.teacher={vae}"],
     ["`distill.teacher`", "model=vae", "diffusion or flow model"]),
    ("distill_on_other_data", ["train.py", *DISTILL, "distill.teacher={ckpt}", "data=image_folder",
                               "data.root={root}/gray_images", "data.channels=1", "data.resolution=16"],
     ["`data`", "data=digits", "tiny_run/checkpoints/last.ckpt"]),
    ("distill_at_other_resolution", ["train.py", *DISTILL, "distill.teacher={ckpt}", "data.resolution=32"],
     ["`data.resolution`", "(1, 16, 16)"]),
    ("distill_unknown_method", ["train.py", *DISTILL, "distill.teacher={ckpt}", "distill.method=magic"],
     ["`distill.method`", "magic", "consistency, progressive, reflow"]),
    ("distill_unknown_option", ["train.py", *DISTILL, "distill.teacher={ckpt}", "+distill.consistency.steps=3"],
     ["`distill.consistency.steps`", "intervals"]),
    ("distill_other_methods_option", ["train.py", *DISTILL, "distill.teacher={ckpt}", "distill.progressive.start_steps=8"],
     ["`distill.progressive.start_steps`", "distill.method=consistency"]),
    ("distill_with_another_sampler", ["train.py", *DISTILL, "distill.teacher={ckpt}", "sampler=ddim"],
     ["`sampler`", "lcm", "sample.py"]),
    ("distill_on_an_optimized_grid", ["train.py", *DISTILL, "distill.teacher={ckpt}", "sampler.grid=optimized"],
     ["`sampler.grid`", "fixed grid", "sampler.grid=logsnr"]),
    ("distill_with_a_scheduler", ["train.py", *DISTILL, "distill.teacher={ckpt}", "scheduler=edm"],
     ["`scheduler`", "teacher's scheduler"]),
    ("distill_guidance_of_an_unconditional_teacher", ["train.py", *DISTILL, "distill.teacher={ckpt}",
                                                      "distill.guidance_scale=3"], ["`distill.guidance_scale`", "unconditional"]),
    ("distill_progressive_steps_that_do_not_halve", ["train.py", *DISTILL, "distill.teacher={ckpt}",
                                                     "distill.method=progressive", "sampler.steps=3"],
     ["`distill.progressive.start_steps`", "sampler.steps"]),
    # python -m tools
    ("notebooks_missing_file", ["-m", "difflab.utils.notebooks", "check", "{root}/nope.ipynb"], ["nope.ipynb"]),
    ("notebooks_not_json", ["-m", "difflab.utils.notebooks", "check", "{root}/broken.ipynb"], ["broken.ipynb"]),
    ("prepare_captions_missing_source", ["-m", "difflab.cli.prepare_captions", "{root}/no_captions", "--out",
                                         "{root}/clean.jsonl"], ["no_captions"]),
    # non-finite values: named by their source, never black images with exit 0
    ("sample_nan_weights", ["sample.py", "ckpt={root}/nan_weights.ckpt", "use_ema=false", "n=1"],
     ["nan_weights.ckpt", f"weight `{CONV_IN}` are NaN or infinite", "`ckpt`", "use_ema=true"]),
    ("sample_bit_flipped_weights", ["sample.py", "ckpt={root}/bitflip.ckpt", "n=1"],
     ["bitflip.ckpt", f"EMA weight `{CONV_IN}`", "use_ema=false"]),
    ("sample_huge_weights_non_finite_batch", ["sample.py", "ckpt={root}/huge_weights.ckpt", "n=2", "batch_size=1",
                                              "out_dir={root}/huge_out"], ["NaN or infinite values", "batch 0", "seed"]),
    ("sample_cond_beyond_float32", ["sample.py", "ckpt={vector}", "n=1", "cond={huge_cond}"],
     ["`cond.size`", "1e+39", "float32"]),
    ("sample_cond_csv_ten_values", ["sample.py", "ckpt={vector}", "cond_csv={root}/cond_ten_values.csv"],
     ["cond_ten_values.csv", "row 2 holds 10 values for the 8 columns"]),
    ("sample_cond_csv_column_twice", ["sample.py", "ckpt={vector}", "cond_csv={root}/cond_twice.csv"],
     ["cond_twice.csv", "['cx'] more than once", "`cond_csv`"]),
    # checkpoints: the message names ckpt= and what to pass
    ("sample_ckpt_is_a_folder", ["sample.py", "ckpt={root}/tiny_run"], ["`ckpt` names the folder", "ckpt={ckpt}"]),
    ("sample_ckpt_without_config", ["sample.py", "ckpt={root}/no_config.ckpt"],
     ["no_config.ckpt", "not a difflab checkpoint", "no config", "Pass ckpt="]),
    ("sample_scheduler_grid_typo", ["sample.py", "ckpt={ckpt}", "scheduler.grid=karass"],
     ["`scheduler.grid`", "karass", "karras"]),
    # data=csv: the file first, rows and header strict, columns inferred
    ("train_csv_missing_file_columns_null", ["train.py", *QUICK, "model=cond_vector", "data=csv",
                                             "data.csv=/nonexistent/t.csv"], ["/nonexistent/t.csv", "`data.csv`"]),
    ("train_csv_column_twice", ["train.py", *QUICK, "model=cond_vector", "data=csv", "data.csv={root}/same_column.csv",
                                "data.resolution=8"], ["same_column.csv", "['a'] more than once"]),
    # the command line: every Hydra error is one paragraph with the fix
    ("train_override_grammar", ["train.py", "trainer.max_steps=[1"], ["`trainer.max_steps=[1`", "Quote"]),
    ("train_key_not_in_struct", ["train.py", "model.net.base_channel=8"],
     ["`model.net.base_channel` does not exist", "base_channels", "+model.net.base_channel=8"]),
    ("train_added_key_the_class_lacks", ["train.py", *QUICK, "+model.net.base_channel=8"],
     ["`model.net.base_channel` is not an option of difflab.nets.unet.UNet", "base_channels"]),
    ("train_append_existing_key", ["train.py", "+seed=3"], ["`seed` exists already", "++seed="]),
    ("train_delete_missing_key", ["train.py", "~callbacks.nope"], ["`callbacks.nope` does not exist"]),
    ("train_interpolation_to_missing_key", ["train.py", *QUICK, "model.guidance_scale=${{nope}}"],
     ["`model.guidance_scale` refers to a key that does not exist"]),
    ("train_unknown_launcher", ["train.py", "hydra/launcher=nope"], ["hydra/launcher/nope", "submitit_slurm"]),
    ("train_scheduler_grid_typo", ["train.py", *QUICK, "scheduler.grid=karass"], ["`scheduler", "karass"]),
    # files: one writer, regular files only, overwrite respected, unusable folders named
    ("predict_out_device", ["predict.py", "ckpt={regressor}", "images={root}/pics", "out=/dev/full", "overwrite=true"],
     ["'/dev/full' (config key `out`) is a character device"]),
    ("predict_out_symlink", ["predict.py", "ckpt={regressor}", "images={root}/pics", "out={root}/linked_preds.csv",
                             "overwrite=true"], ["linked_preds.csv", "symbolic link", "follow_symlinks=true"]),
    ("compare_out_dir_holds_a_comparison", ["compare.py", "runs_dir={root}/cmp_runs", "out_dir={root}/cmp_used"],
     ["cmp_used", "`out_dir`", "comparison.md", "overwrite=true"]),
    ("train_runs_dir_in_proc", ["train.py", *QUICK, "paths.runs_dir=/proc/x"], ["/proc/x", "`paths.runs_dir`"]),
    ("sample_runs_dir_in_proc", ["sample.py", "ckpt={ckpt}", "paths.runs_dir=/proc/x"], ["/proc/x", "`paths.runs_dir`"]),
    ("evaluate_runs_dir_in_proc", ["evaluate.py", "ckpt={ckpt}", "paths.runs_dir=/proc/x"], ["/proc/x", "`paths.runs_dir`"]),
    ("predict_runs_dir_in_proc", ["predict.py", "ckpt={regressor}", "images={root}/pics", "paths.runs_dir=/proc/x"],
     ["/proc/x", "`paths.runs_dir`"]),
    ("compare_runs_dir_in_proc", ["compare.py", "paths.runs_dir=/proc/x"], ["/proc/x", "`paths.runs_dir`"]),
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


# a full disk (every write of the output writer fails half-way with ENOSPC): one message naming the file, no temp file
FULL_DISK = [
    ("train_full_disk", ["train.py", *QUICK, "paths.run_dir={root}/full_train"], ["full_train/config.yaml", "`paths.run_dir`", "no space left"]),
    ("resume_full_disk", ["train.py", *QUICK, "trainer.max_steps=2", "paths.run_dir={root}/tiny_run",
                          "ckpt_path={ckpt}"], ["last.ckpt", "no space left", "is whole", "ckpt_path="]),
    ("predict_full_disk", ["predict.py", "ckpt={regressor}", "images={root}/pics", "out={root}/full_preds.csv"],
     ["full_preds.csv", "`out`", "no space left"]),
    ("compare_full_disk", ["compare.py", "runs_dir={root}/cmp_runs", "out_dir={root}/full_compare"],
     ["full_compare/comparison.md", "`out_dir`", "no space left"]),
]


@pytest.mark.parametrize("name,argv,needles", FULL_DISK, ids=[c[0] for c in FULL_DISK])
def test_a_full_disk_is_one_message_and_leaves_no_temp_file(cli: Runner, files: dict[str, str], name: str,
                                                             argv: list[str], needles: list[str]) -> None:
    before = Path(files["ckpt"]).read_bytes() if name == "resume_full_disk" else None
    patch = "enospc:.ckpt" if name == "resume_full_disk" else "enospc"  # the disk fills up at the checkpoint
    rc, err = cli(*(a.format(**files) for a in argv), patch=patch)
    assert "Traceback" not in err, err[-3000:]
    assert rc == 2, f"exit status {rc}:\n{err[-3000:]}"
    for needle in needles:
        assert needle.format(**files) in err, f"{needle!r} not in:\n{err[-2000:]}"
    assert not list(Path(files["root"]).rglob(temp_name_pattern())), "a temp file survived"
    assert before is None or Path(files["ckpt"]).read_bytes() == before  # the earlier checkpoint is whole


def test_refused_outputs_are_left_as_they_were(cli: Runner, files: dict[str, str]) -> None:
    import stat

    root = Path(files["root"])
    for case in ("predict_out_device", "predict_out_symlink"):
        argv = next(c[1] for c in CASES if c[0] == case)
        assert cli(*(a.format(**files) for a in argv))[0] == 2
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    link = root / "linked_preds.csv"
    assert link.is_symlink() and (root / "real_preds.csv").read_text() == "an earlier result\n"
    assert (root / "cmp_used" / "comparison.md").read_text() == "an earlier comparison\n"


def test_compare_skips_unreadable_records_with_a_warning_and_shows_the_rest(cli: Runner, files: dict[str, str]) -> None:
    root = Path(files["root"])
    answer = cli.answer("compare.py", f"runs_dir={root}/cmp_runs", f"out_dir={root}/cmp_fresh")
    text = answer["stdout"] + answer["stderr"]
    assert answer["rc"] == 0 and "Traceback" not in text, text[-3000:]
    assert f"skipping {root / 'cmp_runs' / 'protocol_x' / 'metrics.json'}: not a metrics.json record" in text
    assert f"skipping {root / 'cmp_runs' / 'name_list' / 'metrics.json'}: not a metrics.json record" in text
    assert "1 runs from" in (root / "cmp_fresh" / "comparison.md").read_text()


def test_csv_columns_are_inferred_without_cond_dim(cli: Runner, files: dict[str, str]) -> None:
    root = Path(files["root"])
    (root / "inferred.csv").write_text("filepath,x1,note,x2\n" + "".join(f"pics/red.png,{i},n,{2 * i}\n"
                                                                        for i in range(8)))
    answer = cli.answer("train.py", *QUICK, "model=cond_vector", "data=csv", f"data.csv={root}/inferred.csv",
                        "data.resolution=8", "model.net.emb_channels=32", f"paths.run_dir={root}/inferred_run",
                        timeout=300)
    text = answer["stdout"] + answer["stderr"]
    assert answer["rc"] == 0, text[-3000:]
    assert "the value columns are the numeric columns of its header: ['x1', 'x2'] (left out, not numbers in the first " \
           "row: ['note'])" in text
    assert json.loads((root / "inferred_run" / "cond_stats.json").read_text())["columns"] == ["x1", "x2"]


def test_no_hostile_checkpoint_ran_its_payload(cli: Runner, files: dict[str, str]) -> None:
    for name in ("hostile_load", "hostile_hub", "hostile_data"):
        cli("sample.py", f"ckpt={files['root']}/{name}.ckpt", "n=1", f"out_dir={files['root']}/ran_{name}")
    assert not (Path(files["root"]) / "payload_ran").exists()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) + len(FULL_DISK) >= 140


def test_overwrite_true_writes_into_a_used_folder_and_a_fresh_folder_needs_nothing(cli: Runner, files: dict[str, str]) -> None:
    root = Path(files["root"])
    rc, err = cli("sample.py", f"ckpt={files['ckpt']}", "n=2", "sampler=ddim", "sampler.steps=2",
                  f"out_dir={root}/used_out", "overwrite=true")
    assert rc == 0, err[-3000:]
    assert (root / "used_out" / "images" / "000001.png").is_file()
    rc, err = cli("sample.py", f"ckpt={files['ckpt']}", "n=2", "sampler=ddim", "sampler.steps=2", f"out_dir={root}/fresh")
    assert rc == 0, err[-3000:]
    assert json.loads((root / "fresh" / "samples.json").read_text())["n"] == 2
