"""compare.py: records -> table rows, Markdown, CSV, plots; bad files skipped; W&B offline fails fast."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config
from difflab.cli import compare
from difflab.compare import (
    build_table,
    collect_local,
    collect_wandb,
    log_wandb_table,
    plot_fid_vs_nfe,
    plot_fid_vs_throughput,
    record_from_wandb,
    to_csv,
    to_markdown,
)
from difflab.conditions import NoCondition
from difflab.evaluation.score import metrics_record, write_record
from difflab.samplers import SamplerSpec

EXPECTED_COLUMNS = ["variant", "scheduler", "sampler", "steps", "nfe", "samples_per_sec", "fid", "broken_rate", "is",
                    "kid", "lpips_diversity", "clip_score", "condition_accuracy", "cond_mae", "cond_mae_std", "bpd", "rfid", "psnr", "params", "train_images_seen", "data",
                    "n_samples", "kind",
                    "run_dir"]
PNG = b"\x89PNG\r\n\x1a\n"


def fake_module(model: str, scheduler: str, data: str, resolution: int, spec: SamplerSpec, params: int,
                images_seen: int) -> SimpleNamespace:
    """Just what metrics_record reads from a DiffusionModule."""
    net = SimpleNamespace(parameters=lambda: [torch.empty(params)])
    return SimpleNamespace(run_config={"choices": {"model": model, "scheduler": scheduler, "data": data},
                                       "data": {"resolution": resolution}},
                           sampler=spec, scheduler=SimpleNamespace(), net=net, train_images_seen=images_seen,
                           condition=NoCondition())


def write(runs: Path, rel: str, kind: str, values: dict[str, float], module: SimpleNamespace, n: int = 128) -> None:
    record = metrics_record(kind=kind, values=values, protocol={"metrics": sorted(values)}, module=module,
                            n_samples=n, seed=0, run_dir=runs / rel, global_step=500)
    write_record(record, runs / rel / "metrics.json")


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Five real records (one without FID), a corrupt file and a JSON file that is no record."""
    runs = tmp_path / "runs"
    digits = dict(model="ddpm", scheduler="ddpm_linear", data="digits", resolution=16, params=1_190_000,
                  images_seen=128_000)
    write(runs, "train/2024-01-01_00-00-00", "train",
          {"fid": 45.123, "broken_rate": 0.0125, "kid": 0.03456, "kid_std": 0.002, "is": 2.346, "is_std": 0.1, "lpips_diversity": 0.23456,
           "samples_per_sec": 12.34, "nfe": 1000.0}, fake_module(spec=SamplerSpec("ddpm", None), **digits))
    for rel, steps, eta, fid, rate in (("evaluate/a", 50, 0.0, 60.5, 250.0), ("evaluate/b", 10, 0.0, 80.25, 1234.5),
                                       ("evaluate/d", 50, 1.0, 55.0, 249.0)):
        write(runs, rel, "evaluate", {"fid": fid, "samples_per_sec": rate, "nfe": float(steps), "clip_score": 21.5},
              fake_module(spec=SamplerSpec("ddim", steps, eta=eta), **digits), n=256)
    write(runs, "evaluate/c", "evaluate", {"samples_per_sec": 3.21, "nfe": 49.0},
          fake_module("score_sde", "edm", "cifar10", 32, SamplerSpec("heun", 25), 35_700_000, 0))
    (runs / "evaluate" / "broken").mkdir(parents=True)
    (runs / "evaluate" / "broken" / "metrics.json").write_text('{"kind": "evaluate", "values": {"fid": 1')
    (runs / "other").mkdir()
    (runs / "other" / "metrics.json").write_text("[1, 2, 3]")
    return runs


def test_collect_local_reads_every_record_and_skips_bad_files_with_a_warning(runs, caplog):
    with caplog.at_level(logging.WARNING, logger="difflab.compare.table"):
        records = collect_local(runs)
    assert [Path(r["run_dir"]).relative_to(runs).as_posix() for r in records] == [
        "evaluate/a", "evaluate/b", "evaluate/c", "evaluate/d", "train/2024-01-01_00-00-00"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(runs / "evaluate" / "broken" / "metrics.json") in warned
    assert str(runs / "other" / "metrics.json") in warned
    with pytest.raises(FileNotFoundError, match="runs_dir"):
        collect_local(runs / "missing")


def test_table_columns_order_and_missing_values(runs):
    rows = build_table(collect_local(runs))
    assert all(list(row) == EXPECTED_COLUMNS for row in rows)
    assert [(r["data"], r["variant"], r["sampler"], r["nfe"]) for r in rows] == [
        ("cifar10 32px", "score_sde", "heun", 49),
        ("digits 16px", "ddpm", "ddim eta=0", 10),
        ("digits 16px", "ddpm", "ddim eta=0", 50),
        ("digits 16px", "ddpm", "ddim eta=1", 50),
        ("digits 16px", "ddpm", "ddpm", 1000),
    ]
    heun, ddpm = rows[0], rows[-1]
    assert heun["fid"] is None and heun["kid"] is None and heun["steps"] == 25 and heun["params"] == 35_700_000
    assert ddpm["steps"] is None and ddpm["clip_score"] is None and ddpm["kind"] == "train"
    assert (ddpm["fid"], ddpm["kid"], ddpm["is"], ddpm["n_samples"]) == (45.123, 0.03456, 2.346, 128)
    assert ddpm["broken_rate"] == 0.0125 and heun["broken_rate"] is None
    assert "| 45.12 | 1.2% |" in to_markdown(rows)
    assert (ddpm["params"], ddpm["train_images_seen"], ddpm["scheduler"]) == (1_190_000, 128_000, "ddpm_linear")


def test_rows_sort_by_nfe_within_a_series_and_missing_nfe_last():
    records = [{"kind": "evaluate", "variant": "ddpm", "scheduler": "edm", "sampler": {"name": "ode", "steps": None},
                "data": {"name": "digits", "resolution": 16}, "run_dir": run_dir, "values": values}
               for run_dir, values in (("/x", {"nfe": 50.0}), ("/y", {"nfe": 20.0}), ("/w", {}), ("/z", {"nfe": 100.5}))]
    assert [(r["run_dir"], r["nfe"]) for r in build_table(records)] == [("/y", 20), ("/x", 50), ("/z", 100.5), ("/w", None)]


def markdown_cells(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return [dict(zip(split[0], cells)) for cells in split[2:]]


def test_markdown_formats_numbers_and_shows_missing_as_dash(runs):
    rows = build_table(collect_local(runs))
    cells = markdown_cells(to_markdown(rows, root=runs))
    assert len(cells) == 5
    heun, fast_ddim, ddpm = cells[0], cells[1], cells[4]
    assert (ddpm["FID ↓"], ddpm["KID ↓"], ddpm["IS ↑"], ddpm["LPIPS div. ↑"]) == ("45.12", "0.0346", "2.35", "0.235")
    assert (ddpm["samples/s"], ddpm["params"], ddpm["images seen"], ddpm["NFE"]) == ("12.3", "1.19M", "128k", "1000")
    assert ddpm["CLIP ↑"] == "–" and ddpm["steps"] == "–" and ddpm["run"] == "train/2024-01-01_00-00-00"
    assert (fast_ddim["FID ↓"], fast_ddim["samples/s"], fast_ddim["CLIP ↑"]) == ("80.25", "1234.5", "21.50")
    assert (heun["FID ↓"], heun["KID ↓"], heun["params"], heun["images seen"]) == ("–", "–", "35.7M", "0")


def test_csv_round_trips_raw_numbers(runs, tmp_path):
    rows = build_table(collect_local(runs))
    with to_csv(rows, tmp_path / "out" / "table.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        read = list(reader)
    assert reader.fieldnames == EXPECTED_COLUMNS and len(read) == 5
    ddpm, heun = read[4], read[0]
    assert float(ddpm["fid"]) == 45.123 and float(ddpm["kid"]) == 0.03456 and float(ddpm["samples_per_sec"]) == 12.34
    assert int(ddpm["params"]) == 1_190_000 and int(ddpm["nfe"]) == 1000 and ddpm["steps"] == ""
    assert heun["fid"] == "" and heun["kid"] == "" and heun["data"] == "cifar10 32px"


def colored_pixels(path: Path) -> int:
    """Pixels that are neither white, black nor gray: the plotted series (text is drawn in black)."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((rgb.max(-1) - rgb.min(-1)) > 40).sum())


def test_plots_are_png_files_with_series_and_say_so_without_fid(runs, tmp_path):
    rows = build_table(collect_local(runs))
    for plot in (plot_fid_vs_nfe, plot_fid_vs_throughput):
        path = plot(rows, tmp_path / f"{plot.__name__}.png")
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
        assert colored_pixels(path) > 500
        empty = plot([r | {"fid": None} for r in rows], tmp_path / f"{plot.__name__}_empty.png")
        assert empty.read_bytes()[:8] == PNG and empty.stat().st_size > 1000
        assert colored_pixels(empty) < 50  # only the "no FID values" text


def test_log_wandb_table_logs_the_rows_and_both_plots(runs):
    import wandb

    logged = []
    logger = SimpleNamespace(experiment=SimpleNamespace(log=logged.append))
    rows = build_table(collect_local(runs))
    log_wandb_table(rows, logger)
    (payload,) = logged
    assert set(payload) == {"comparison", "fid_vs_nfe", "fid_vs_samples_per_sec"}
    assert isinstance(payload["comparison"], wandb.Table) and list(payload["comparison"].columns) == [*EXPECTED_COLUMNS, "samples"]
    assert len(payload["comparison"].data) == 5 and payload["comparison"].data[4][6] == 45.123
    assert all(isinstance(payload[k], wandb.Image) for k in ("fid_vs_nfe", "fid_vs_samples_per_sec"))


def test_wandb_runs_become_records():
    evaluate = {"kind": "evaluate", "variant": "ddim", "scheduler": "ddpm_cosine", "run_dir": "/r/eval",
                "sampler": {"name": "ddim", "steps": 20, "eta": 0.0}, "data": {"name": "cifar10", "resolution": 32},
                "params": 35_700_000, "n_samples": 10000}
    train = {"choices": {"model": "ddpm", "scheduler": "ddpm_linear", "sampler": "ddpm", "data": "digits"},
             "sampler": {"_target_": "difflab.samplers.SamplerSpec", "name": "ddpm", "steps": None,
                         "variance": "small", "clip_denoised": False},
             "data": {"resolution": 16}, "metrics": {"n_samples": 128, "seed": 0}, "paths": {"run_dir": "/r/train"}}
    records = [
        record_from_wandb(evaluate, {"eval/fid": 3.5, "eval/nfe": 20.0, "_step": 0}, path="e/p/1"),
        record_from_wandb(train, {"val/fid": 40.0, "perf/nfe": 1000.0, "val/loss": 0.03, "trainer/global_step": 500},
                          path="e/p/2"),
    ]
    assert record_from_wandb({"task_name": "compare"}, {"comparison": {"_type": "table-file"}}) is None
    assert records[0]["values"] == {"fid": 3.5, "nfe": 20.0}
    assert records[1]["sampler"] == {"name": "ddpm", "steps": None, "variance": "small"}
    assert records[1]["global_step"] == 500
    rows = build_table(records)
    assert [(r["data"], r["variant"], r["scheduler"], r["sampler"], r["fid"], r["run_dir"]) for r in rows] == [
        ("cifar10 32px", "ddim", "ddpm_cosine", "ddim", 3.5, "/r/eval"),
        ("digits 16px", "ddpm", "ddpm_linear", "ddpm", 40.0, "/r/train"),
    ]


def test_collect_wandb_fails_fast_and_clearly_offline_or_without_a_key(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"'me/diffusion-runs'.*WANDB_MODE=offline"):
        collect_wandb("diffusion-runs", entity="me")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(RuntimeError, match=r"'diffusion-runs'.*no W&B API key"):
        collect_wandb("diffusion-runs")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("logger", ["logger=csv", "~logger"])
def test_compare_end_to_end_through_hydra(runs, tmp_path, logger):
    cfg = compose_config("compare", [logger, f"runs_dir={runs}"], tmp_path)
    out = compare.run(cfg)
    assert out["out_dir"] == tmp_path / "run" and len(out["rows"]) == 5
    names = {"comparison.md", "comparison.csv", "fid_vs_nfe.png", "fid_vs_samples_per_sec.png"}
    assert {p.name for p in out["paths"].values()} == names and all((tmp_path / "run" / n).is_file() for n in names)
    text = (tmp_path / "run" / "comparison.md").read_text()
    assert "5 runs from" in text and "| ddpm | ddpm_linear | ddim eta=1 | 50 | 50 |" in text
    with (tmp_path / "run" / "comparison.csv").open(newline="") as f:
        assert [r["sampler"] for r in csv.DictReader(f)] == [r["sampler"] for r in out["rows"]]


def test_compare_run_inside_runs_dir_does_not_pick_up_its_own_outputs(runs, tmp_path):
    for i in range(2):
        cfg = compose_config("compare", ["~logger", f"runs_dir={runs}", f"out_dir={runs}/compare/{i}"], tmp_path)
        assert len(compare.run(cfg)["rows"]) == 5
    assert (runs / "compare" / "1" / "comparison.csv").is_file()
