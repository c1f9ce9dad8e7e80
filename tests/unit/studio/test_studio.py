"""The studio without a browser: served folders, requests as sample.py overrides, the model cache, vector models'
sliders and measured values, cancelling. One tiny vector-conditioned checkpoint (shapes, 8 px) serves the module.
The browser suite (tests/e2e/test_studio_browser.py) drives the page itself."""

from __future__ import annotations

import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import compose_config
from difflab.errors import ConfigError
from difflab.studio.files import Folders, OutsideFoldersError
from difflab.studio.forms import SampleForm, compose_sample, quoted

@pytest.fixture(scope="module")
def vector(studio_run: dict[str, Path]) -> dict[str, Any]:
    """The session's tiny vector-conditioned checkpoint and a Studio serving its root (outputs in a folder of this
    module)."""
    from difflab.studio.service import Studio

    cfg = compose_config("studio", ["max_models=1", "batch_size=4", f"out_dir={studio_run['root']}/runs/unit"],
                         studio_run["root"])
    return {"root": studio_run["root"], "ckpt": studio_run["ckpt"], "studio": Studio(cfg)}


def test_folders_refuse_every_way_out(tmp_path: Path) -> None:
    runs, ckpts, elsewhere = tmp_path / "runs", tmp_path / "ckpts", tmp_path / "elsewhere"
    for folder in (runs / "a" / "checkpoints", ckpts / "sd" / "unet", elsewhere):
        folder.mkdir(parents=True)
    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        (ckpts / "sd" / part).mkdir()
    (runs / "a" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (runs / "a" / "checkpoints" / ".last.ckpt.tmp.ckpt").write_bytes(b"x")
    (elsewhere / "secret.ckpt").write_bytes(b"x")
    (runs / "out.ckpt").symlink_to(elsewhere / "secret.ckpt")
    (runs / "in.ckpt").symlink_to(runs / "a" / "checkpoints" / "last.ckpt")
    folders = Folders.of(runs, [runs, ckpts])
    assert folders.check(runs / "a" / "checkpoints" / "last.ckpt") == (runs / "a/checkpoints/last.ckpt").resolve()
    assert folders.check(runs / "in.ckpt") == (runs / "a/checkpoints/last.ckpt").resolve()
    for bad in (elsewhere / "secret.ckpt", runs / ".." / "elsewhere" / "secret.ckpt", runs / "out.ckpt", "/etc/passwd",
                f"{runs}/a/../../elsewhere"):
        with pytest.raises(OutsideFoldersError, match="outside the folders this studio serves"):
            folders.check(bad)
    old = os.getcwd()
    try:
        os.chdir(runs)
        assert folders.check("a/checkpoints/last.ckpt").is_file()
        with pytest.raises(OutsideFoldersError):
            folders.check("../elsewhere/secret.ckpt")
    finally:
        os.chdir(old)
    listed = {folders.label(p) for p in folders.checkpoints()}
    assert listed == {"runs/a/checkpoints/last.ckpt", "runs/in.ckpt", "ckpts/sd"}  # no temp file, no link out
    with pytest.raises(FileNotFoundError, match="`ckpt_dirs`"):
        Folders.of(runs, [tmp_path / "nope"])


@pytest.mark.parametrize("text", ['a (cat:1.4), [dog] {x}', 'say "hi"', "back\\slash", "end\\", "x=y, z", "it's"])
def test_prompts_survive_the_command_line(text: str, tmp_path: Path) -> None:
    form = SampleForm(model=str(tmp_path / "m.ckpt"), seed=7, n=2, sampler="DPM++ 2M Karras", steps=9,
                      prompt=text, negative_prompt=text + "!")
    cfg = compose_sample(form.overrides(), tmp_path / "out")
    assert (cfg.prompt, cfg.negative_prompt, cfg.seed, cfg.n) == (text, text + "!", 7, 2)
    assert (cfg.sampler.name, cfg.sampler.grid, cfg.sampler.steps) == ("dpmpp_2m", "karras", 9)
    assert form.command().startswith("python sample.py ckpt=") and quoted(text).startswith('"')


def test_stable_diffusion_folders_compose_as_model_sd(tmp_path: Path) -> None:
    (tmp_path / "sd").mkdir()
    form = SampleForm(model=str(tmp_path / "sd"), seed=3, steps=12, prompt="a (red:1.2) fox", guidance_scale=7.5)
    cfg = compose_sample(form.overrides(), tmp_path / "out")
    assert cfg.model._target_.endswith("load_stable_diffusion") and cfg.pipeline.path == str(tmp_path / "sd")
    assert (cfg.sampler.steps, cfg.guidance_scale, cfg.prompt) == (12, 7.5, "a (red:1.2) fox")


def test_a_vector_model_gets_one_slider_per_column_and_its_raw_values(vector: dict[str, Any]) -> None:
    studio = vector["studio"]
    info = studio.open(str(vector["ckpt"]))
    stats = studio.cache.peek(studio.model_config(str(vector["ckpt"]))).condition.stats
    assert [c[0] for c in info.columns] == stats.columns and info.measurable and info.guided
    assert [c[1:] for c in info.columns] == list(zip(stats.mean, stats.std))  # ranges from the checkpoint's statistics
    wanted = {name: mean + 0.123456789 * std for name, mean, std in info.columns}
    form = SampleForm(model=str(vector["ckpt"]), seed=11, n=2, sampler="euler", steps=2, cond=wanted,
                      guidance_scale=2.5)
    result = studio.generate(form)
    got = result.record["cond"]
    assert got.keys() == wanted.keys()
    assert all(math.isclose(got[k], wanted[k], rel_tol=1e-6, abs_tol=1e-6) for k in wanted)  # float32 round trip
    assert len(result.images) == 2 and result.record["seed"] == 11 and result.record["guidance_scale"] == 2.5
    assert "cond={" in result.command and "seed=11" in result.command


def test_the_cache_keeps_one_model_and_switches_samplers_without_loading(vector: dict[str, Any]) -> None:
    studio = vector["studio"]
    cache, path = studio.cache, str(vector["ckpt"])
    studio.open(path)
    before = cache.loads
    for sampler, steps in (("ddim", 3), ("heun", 2), (None, None)):
        form = SampleForm(model=path, seed=0, sampler=sampler, steps=steps, n=1,
                          cond={c: m for c, m, _ in studio.open(path).columns})
        result = studio.generate(form)
        assert result.record["sampler"]["name"] == (sampler or "ddpm")  # None: the checkpoint's own sampler again
        assert cache.load(compose_sample(form.overrides(), studio.out_dir)).sampler.name == "ddpm"  # kept as it was
    assert cache.loads == before and len(cache) == 1
    copy = vector["root"] / "runs" / "copy.ckpt"
    shutil.copyfile(path, copy)
    studio.open(str(copy))
    assert cache.loads == before + 1 and len(cache) == 1  # bounded: the first model left
    os.utime(copy, ns=(1, 1))
    studio.open(str(copy))
    assert cache.loads == before + 2  # the file changed: loaded again


def test_a_cancelled_generation_stops_at_its_next_step(vector: dict[str, Any]) -> None:
    from difflab.studio.service import Cancelled

    studio, steps = vector["studio"], []
    stop = threading.Event()

    def progress(done: float, total: float) -> None:
        steps.append((round(done, 4), total))
        if len(steps) == 3:
            stop.set()

    form = SampleForm(model=str(vector["ckpt"]), seed=1, n=8, sampler="ddim", steps=50,
                      cond={c: m for c, m, _ in studio.open(str(vector["ckpt"])).columns})
    before = set(studio.out_dir.glob("0*"))
    with pytest.raises(Cancelled):
        studio.generate(form, progress, stop)
    assert steps == [(0.08, 8), (0.16, 8), (0.24, 8)]  # a batch of 4 images moves 4/50 per DDIM step
    (folder,) = set(studio.out_dir.glob("0*")) - before
    assert not (folder / "grid.png").exists()


def test_measure_reads_raw_values_through_the_regressor(vector: dict[str, Any], tmp_path: Path) -> None:
    """The regressor (here a cached one whose head always says z = (0.5, -1, ...)) read in the raw units of the
    columns: raw = mean + z * std, for images preprocessed by the run's data module."""
    from torchvision.utils import save_image

    from difflab.api.images import run_data
    from difflab.evaluation.classifier import VectorTarget, cache_path
    from difflab.studio.measure import predict_values

    studio = vector["studio"]
    model = studio.cache.load(studio.model_config(str(vector["ckpt"])))
    data, stats = run_data(model.module), model.condition.stats
    kind = VectorTarget()
    network = kind.network(kind.model(data))
    z = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 0.25, -2.0])[: stats.dim]
    with torch.no_grad():
        head = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
        head.weight.zero_()
        head.bias.copy_(z)
    cache = tmp_path / "stats"
    target = cache_path(data, cache, epochs=1, seed=0, target="cond")
    target.parent.mkdir()
    torch.save({"state_dict": network.state_dict(), "val_mae_std": 0.1}, target)
    files = []
    for i, img in enumerate(torch.rand(2, 3, 20, 12) * 2 - 1):  # not the training size: resized like training data
        save_image((img + 1) / 2, tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    values = predict_values(model, files, cache, epochs=1)
    assert len(values) == 2 and list(values[0]) == stats.columns
    for row in values:
        for (column, mean, std), zi in zip(zip(stats.columns, stats.mean, stats.std), z.tolist()):
            assert row[column] == pytest.approx(mean + zi * std, rel=1e-5, abs=1e-6)
    with pytest.raises(Exception, match="needs at least one image"):
        predict_values(model, [], cache)


def test_measure_with_a_regressor_checkpoint_reads_what_predict_py_reads(vector: dict[str, Any], tmp_path: Path) -> None:
    """A `model=regressor` checkpoint under the served folders: the Measure tab's table is predict.py's CSV (same
    columns, same values), for generated-size files and for files that need the data module's resize."""
    import csv

    from torchvision.utils import save_image

    from difflab.cli import predict, train

    from difflab.studio.service import Studio

    root = tmp_path / "served"  # a studio of its own: the shared one's checkpoint menus stay as the browser suite knows them
    reg = train.run(compose_config("train", ["model=regressor", "data=shapes", "data.resolution=8", "data.num_samples=64",
                                             "debug=fast", "logger=csv", "metrics=none"], root / "runs" / "train" / "reg"))
    studio = Studio(compose_config("studio", [f"out_dir={root}/runs/studio"], root))
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate((8, 8, 20)):
        save_image(torch.rand(3, size, size), images / f"{i}.png")
    files = sorted(str(p) for p in images.glob("*.png"))
    head, rows = studio.measure(str(reg["last_ckpt"]), files)
    predict.run(compose_config("predict", [f"ckpt={reg['last_ckpt']}", f"images={images}", f"out={tmp_path}/p.csv"],
                               tmp_path))
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.reader(f))
    assert head[1:] == table[0][1:] and len(rows) == 3
    for row, expected in zip(rows, table[1:]):
        assert row[0] == Path(expected[0]).name
        assert row[1:] == pytest.approx([float(v) for v in expected[1:]], rel=1e-3, abs=1e-3)


def test_img2img_keeps_the_upload_and_its_command_names_it(vector: dict[str, Any], tmp_path: Path) -> None:
    from PIL import Image

    studio = vector["studio"]
    upload = tmp_path / "upload.png"
    Image.new("RGB", (24, 16), (200, 30, 30)).save(upload)
    columns = studio.open(str(vector["ckpt"])).columns
    form = SampleForm(model=str(vector["ckpt"]), seed=5, n=1, sampler="ddim", steps=4, init_image=str(upload),
                      strength=0.5, cond={c: m for c, m, _ in columns})
    result = studio.generate(form)
    kept = Path(result.record["init_image"])
    assert result.record["mode"] == "img2img" and result.record["strength"] == 0.5
    assert kept.parent == studio.out_dir / "inputs" and kept.read_bytes() == upload.read_bytes()
    assert f"init_image={kept}" in result.command.replace('"', "")
    assert result.record["preprocessing"]["resolution"] == 8  # the run's data module resized it


def test_runs_read_as_compare_py_tables_them(vector: dict[str, Any], tmp_path: Path) -> None:
    from difflab.compare import build_table, collect_local
    from difflab.studio.runs import grids_of, read_runs, run_grid, shown, table_values

    folders = vector["studio"].folders
    rows = read_runs(folders)
    assert rows == build_table(collect_local(folders.runs_dir))
    (values,) = table_values(rows, folders)
    assert values[shown().index("variant")] == "cond_vector" and values[-1] == "runs/train/tiny"
    assert run_grid(rows[0]["run_dir"], folders).name == "final.png"
    ((image, caption),) = grids_of(rows, ["runs/train/tiny", "runs/no/such/run"], folders)
    assert image.ndim == 3 and "runs/train/tiny" in caption
    with pytest.raises(OutsideFoldersError):
        run_grid(tmp_path, folders)


def test_recorded_seeds_replay(tmp_path: Path) -> None:
    """A seed drawn by seed=-1 (up to 2^63) is taken back exactly from the command line."""
    from difflab.api import checks

    cfg = compose_sample(SampleForm(model=str(tmp_path / "m.ckpt"), seed=(1 << 63) - 1).overrides(), tmp_path)
    assert checks.seed(cfg.seed) == (1 << 63) - 1


def test_requests_compose_inside_a_running_hydra_app(tmp_path: Path) -> None:
    """`python studio.py` serves from inside @hydra.main, whose Hydra is initialized."""
    from hydra import initialize_config_dir

    from conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose_sample(SampleForm(model=str(tmp_path / "m.ckpt"), seed=2).overrides(), tmp_path)
    assert cfg.seed == 2


def test_a_dropped_png_fills_the_sample_tab(vector: dict[str, Any]) -> None:
    studio = vector["studio"]
    columns = studio.open(str(vector["ckpt"])).columns
    wanted = {c: round(m + 0.25 * s, 4) for c, m, s in columns}
    form = SampleForm(model=str(vector["ckpt"]), seed=21, n=2, sampler="DPM++ 2M Karras", steps=3, cond=wanted,
                      guidance_scale=3.0)
    result = studio.generate(form)
    fields = studio.read_png(str(result.out_dir / "images" / "000001.png"))
    assert fields.model == str(vector["ckpt"].resolve()) and (fields.sampler, fields.grid, fields.steps) == \
        ("dpmpp_2m", "karras", 3)
    assert (fields.n, fields.seed, fields.guidance_scale, fields.inputs) == (2, 21, 3.0, {"cond": wanted})
    assert fields.left_out == []  # everything it says has a field
    again = SampleForm(model=fields.model, seed=fields.seed, n=fields.n, sampler=fields.sampler, steps=fields.steps,
                       grid=fields.grid, guidance_scale=fields.guidance_scale, inputs=fields.inputs)
    assert [p.read_bytes() for p in sorted((studio.generate(again).out_dir / "images").glob("*.png"))] == \
        [p.read_bytes() for p in sorted((result.out_dir / "images").glob("*.png"))]  # the same images back


def test_slots_filled_from_a_request_read_back_as_it() -> None:
    pytest.importorskip("gradio", reason="the studio's page needs the studio extra")
    from difflab.conditions import Input
    from difflab.studio.slots import MAX_CHOICES, MAX_TEXTS, slot_fill, slot_values

    inputs = [Input("class_label", "choice", "class", choices=(0, 1, 2)), Input("prompt", "text", "prompt", value=""),
              Input("cond", "number", "a", column="a", low=0, high=1), Input("cond", "number", "b", column="b",
                                                                              low=0, high=1)]
    given = {"class_label": 2, "prompt": "a (red:1.2) fox", "cond": {"a": 0.25, "b": 0.75}}
    updates = slot_fill(inputs, given)
    values = [u.get("value") for u in updates]
    assert values[0] == "2" and values[MAX_CHOICES] == "a (red:1.2) fox"
    assert values[MAX_CHOICES + MAX_TEXTS : MAX_CHOICES + MAX_TEXTS + 2] == [0.25, 0.75]
    assert slot_values(inputs, values) == given


def test_the_xyz_plot_draws_the_request_over_its_keys(vector: dict[str, Any]) -> None:
    studio = vector["studio"]
    columns = studio.open(str(vector["ckpt"])).columns
    form = SampleForm(model=str(vector["ckpt"]), seed=4, n=1, sampler="euler", steps=2,
                      cond={c: m for c, m, _ in columns})
    result = studio.xyz(form, [("sampler.steps", "2, 3"), ("guidance_scale", "1, 2.5"), (None, "")])
    assert len(result.images) == 1 and result.images[0].ndim == 3 and len(result.record["cells"]) == 4
    assert "xyz=" in result.command and (result.out_dir / "xyz.json").is_file()
    with pytest.raises(ConfigError, match="`xyz`"):
        studio.xyz(form, [(None, ""), ("", "1")])
    with pytest.raises(ConfigError, match="(?s)`xyz`.*max_images"):
        studio.xyz(form, [("seed", ", ".join(map(str, range(studio.max_images + 1))))])


def test_the_page_fills_its_fields_from_a_dropped_png(vector: dict[str, Any]) -> None:
    gr = pytest.importorskip("gradio", reason="the studio's page needs the studio extra")
    from difflab.studio.app import Page

    studio = vector["studio"]
    columns = studio.open(str(vector["ckpt"])).columns
    result = studio.generate(SampleForm(model=str(vector["ckpt"]), seed=9, n=1, sampler="heun", steps=2,
                                        cond={c: m for c, m, _ in columns}))
    with gr.Blocks() as demo:
        page = Page(studio, demo)
        page.sample_tab()
        page.wire_sample()
    png = str(result.out_dir / "images" / "000000.png")
    model = str(vector["ckpt"].resolve())
    out = page.png.read(png, model)  # the model picked is the PNG's: its fields are filled at once
    assert len(out) == len(page.png.targets) + 4 and out[-1].startswith("Settings read from 000000.png")
    filled = dict(zip(["model", *range(len(page.png.targets))], out))
    assert filled[0]["value"] == "heun" and filled[1]["value"] == 2 and out[-2] is None  # sampler, steps; no pending
    assert page.png.targets[-4] is page.n and filled[len(page.png.targets) - 3]["value"] == 9  # the seed
    other = page.png.read(png, None)  # no model picked yet: the PNG's is picked, its fields wait for it to load
    assert other[0] == model and other[-2].seed == 9
    with_error = page.png.read(str(vector["root"] / "nope.png"), model)
    assert with_error[-1].startswith("Error:") and "nope.png" in with_error[-1]


def _port_in_time_wait() -> int:
    """A port of 127.0.0.1 whose server closed an accepted connection first: that side now sits in TIME_WAIT."""
    import socket

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first, as a studio that stops does
    client.recv(1)
    client.close()
    server.close()
    return port


def test_a_port_just_freed_by_a_stopped_studio_serves_again() -> None:
    import socket

    from difflab.studio.server import check_address

    port = _port_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):  # the oracle: a bind without SO_REUSEADDR is refused
        plain.bind(("127.0.0.1", port))
    assert check_address("127.0.0.1", port) == ("127.0.0.1", port)
