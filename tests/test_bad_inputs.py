"""The bad-input corpus: what users get wrong, through the real entry points.

Every case runs a real script (train.py, sample.py, evaluate.py, compare.py or a `python -m difflab...` tool)
with a mistake in its input, and must exit with status 2, print no traceback, and name the config key or file
at fault. The scripts run in children forked from one warm process (tests/cli_runner.py), so the corpus costs
one Python/torch start-up plus about a second per case; one tiny checkpoint is trained once for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.net.base_channels=8", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1", "model.net.num_heads=1"]
QUICK = ["debug=fast", "logger=csv", "metrics=none", *TINY]  # a train.py that gets past its checks trains one step


class Runner:
    """Sends cases to one `tests/cli_runner.py` process; each answer is (exit status, stderr)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DIFFLAB_ALLOW_DOWNLOAD")}
        env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO / "src"),
                   TORCH_HOME=str(root / "torch_home"))  # an empty hub cache: no metric weights, and no download
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "cli_runner.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=root, env=env)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def __call__(self, *argv: str, timeout: float = 120) -> tuple[int, str]:
        args = list(argv) if argv[0] == "-m" else [*argv, f"paths.root_dir={self.root}"]
        self.proc.stdin.write(json.dumps({"argv": args, "cwd": str(self.root), "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["rc"], answer["stderr"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


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
    (root / "a_file").write_text("not a folder\n")
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("no images here\n")
    (root / "used_out").mkdir()
    (root / "used_out" / "grid.png").write_bytes(b"an earlier result")
    Image.new("RGB", (8, 8)).save(root / "picture.png")
    (root / "table.csv").write_text("filepath,a,b\npicture.png,1,2\npicture.png,3,4\n")
    (root / "broken.ipynb").write_text("{ not json")
    return {"ckpt": str(root / "tiny_run" / "checkpoints" / "last.ckpt"), "root": str(root)}


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
    ("sample_unknown_sampler", ["sample.py", "ckpt={ckpt}", "sampler=dpm_9000"], ["dpm_9000", "sampler"]),
    ("sample_unknown_sampler_knob", ["sample.py", "ckpt={ckpt}", "sampler=ddim", "+sampler.etaa=0.5"],
     ["`sampler.etaa`", "sampler.eta"]),
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
    ("sample_negative_seed", ["sample.py", "ckpt={ckpt}", "seed=-5"], ["`seed`"]),
    ("sample_seed_not_a_number", ["sample.py", "ckpt={ckpt}", "seed=abc"], ["`seed`"]),
    # evaluate.py
    ("evaluate_nothing_to_score", ["evaluate.py"], ["`ckpt`", "`images`"]),
    ("evaluate_ckpt_and_images", ["evaluate.py", "ckpt={ckpt}", "images={root}/no_images"], ["`ckpt`", "`images`"]),
    ("evaluate_missing_images", ["evaluate.py", "images={root}/nope", "data=digits"], ["nope", "`images`"]),
    ("evaluate_folder_without_images", ["evaluate.py", "images={root}/no_images", "data=digits"],
     ["no_images", "`images`"]),
    ("evaluate_n_samples_zero", ["evaluate.py", "ckpt={ckpt}", "n_samples=0"], ["`n_samples`"]),
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
    ("train_resume_missing_ckpt", ["train.py", *QUICK, "ckpt_path={root}/gone.ckpt"], ["gone.ckpt", "`ckpt_path`"]),
    # python -m tools
    ("notebooks_missing_file", ["-m", "difflab.utils.notebooks", "check", "{root}/nope.ipynb"], ["nope.ipynb"]),
    ("notebooks_not_json", ["-m", "difflab.utils.notebooks", "check", "{root}/broken.ipynb"], ["broken.ipynb"]),
    ("prepare_captions_missing_source", ["-m", "difflab.data.prepare_captions", "{root}/no_captions", "--out",
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
