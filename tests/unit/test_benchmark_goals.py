"""The goal lines of the few-step benchmarks (benchmarks/fid_samplers.py, benchmarks/few_step.py) compare the cells
the issue names, and the page section fid_samplers.py regenerates is replaced in place, not appended."""

from __future__ import annotations

import importlib
import statistics
import sys
from pathlib import Path

import pytest

from conftest import REPO

BENCHMARKS = str(REPO / "benchmarks")
sys.path.insert(0, BENCHMARKS)
fid_samplers = importlib.import_module("fid_samplers")
few_step = importlib.import_module("few_step")
sys.path[:] = [p for p in sys.path if p != BENCHMARKS]  # the scripts put it first: no test imports their names

FINE = {"fid": 11.5, "blocks": [25.0, 26.0, 27.0, 26.0, 25.0], "check": 0.002}


def cells(ours5: float, theirs10: float, ours10: float, theirs20: float, fid10: float) -> dict:
    """Two difflab rows, one diffusers row; a difflab row that spent more calls than its NFE at 5."""
    blocks = [b + fid10 - FINE["fid"] for b in FINE["blocks"]]
    return {
        "unipc@optimized [difflab]": {5: {"calls": 5, "rmse": ours5}, 10: {"calls": 10, "rmse": ours10, "fid": fid10,
                                                                         "blocks": blocks}},
        "heun@karras [difflab]": {5: {"calls": 6, "rmse": ours5 / 10}, 10: {"calls": 10, "rmse": 0.5, "fid": 90.0,
                                                                           "blocks": [90.0, 91.0]}},
        "unipc@logsnr [diffusers]": {10: {"calls": 10, "rmse": theirs10}, 20: {"calls": 20, "rmse": theirs20}},
    }


def test_solver_goals_compare_difflab_at_half_the_calls_of_diffusers() -> None:
    lines = fid_samplers.goals(cells(0.05, 0.04, 0.01, 0.02, 11.9), FINE)
    assert len(lines) == 3
    assert "NFE 5 no larger than diffusers' best at NFE 10: **not met**; 0.0500 (unipc@optimized [difflab])" in lines[0]
    assert "0.0400 (unipc@logsnr [diffusers])" in lines[0]  # the 6-call row at NFE 5 does not count
    assert "NFE 10 no larger than diffusers' best at NFE 20: **met**; 0.0100" in lines[1]
    spread = statistics.stdev(FINE["blocks"])
    assert f"**met**; 11.90 (unipc@optimized [difflab]) - 11.50 = +0.40 against {spread:.2f}" in lines[2]
    assert "block by block: +0.40 / +0.40" in lines[2]


def test_the_fid_goal_fails_beyond_one_block_standard_deviation() -> None:
    spread = statistics.stdev(FINE["blocks"])
    assert "**not met**" in fid_samplers.goals(cells(0.05, 0.04, 0.01, 0.02, 11.5 + spread + 0.01), FINE)[2]
    assert "**met**" in fid_samplers.goals(cells(0.05, 0.04, 0.01, 0.02, 11.5 + spread - 0.01), FINE)[2]


def test_the_docs_section_is_regenerated_in_place(tmp_path: Path) -> None:
    page, figure = tmp_path / "docs" / "samplers.md", REPO / "benchmarks" / "results" / "fid_samplers.png"
    page.parent.mkdir()
    page.write_text(f"# Samplers\n\nbefore\n{fid_samplers.BEGIN}\nold table\n{fid_samplers.END}\nafter\n")
    report = "# Title\n\n## Goals\n\n- met\n"
    for _ in range(2):
        fid_samplers.update_docs(page, report, figure)
    text = page.read_text()
    assert text.count(fid_samplers.BEGIN) == 1 and "old table" not in text
    assert ("### Title\n\n#### Goals\n\n- met\n\nThe plot of both, coupled RMSE and FID against NFE: "
            "`benchmarks/results/fid_samplers.png`.\n") in text
    assert text.startswith("# Samplers\n\nbefore\n") and text.endswith(f"{fid_samplers.END}\nafter\n")
    page.write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- fid_samplers.py: begin -->"):
        fid_samplers.update_docs(page, report, figure)


def test_few_step_goals_compare_the_best_student_with_the_best_teacher_row() -> None:
    fids = {"teacher unipc@logsnr": {"4": 40.0, "5": 30.0, "20": 10.0},
            "teacher dpmpp_2m@karras": {"4": 45.0, "5": 25.0, "20": 12.0},
            "student consistency (lcm)": {"1": 26.0, "4": 11.6},
            "student reflow (euler)": {"1": 24.0, "4": 11.4}}
    at4, at1 = few_step.goals(fids)
    assert at4.startswith("Goal (best student at 4 NFE <= 1.15 x the teacher's best solver at 20 NFE): met; 11.40 "
                          "(student reflow (euler)) against 1.15 x 10.00 = 11.50 (teacher unipc@logsnr)")
    assert "at 1 NFE <= 1 x the teacher's best solver at 5 NFE): met; 24.00 (student reflow (euler)) against 1 x 25.00" in at1
    fids["student reflow (euler)"] = {"1": 25.5, "4": 11.6}
    assert all(": not met;" in line for line in few_step.goals(fids))
    fids["student reflow (euler@logsnr)"] = fids["student reflow (euler@trailing)"] = {"1": 23.0, "4": 11.0}
    at4, at1 = few_step.goals(fids)
    assert "met; 23.00 (student reflow (euler@logsnr) = student reflow (euler@trailing)) against" in at1


def test_few_step_samples_each_distinct_sigma_grid_of_a_student_once(studio_run) -> None:
    calls = []

    def score(extractor, ref, module, spec, n, batch, seed):
        calls.append((spec.steps, spec.grid))
        return float(len(calls))  # each sampling its own value: a shared cell shows one value in several rows

    grids = ["trailing", "logsnr", "karras"]
    cells = [(1, studio_run["ckpt"]), (4, studio_run["ckpt"])]
    rows = few_step.score_students(None, None, "reflow", cells, grids, 8, 8, score=score)
    assert set(rows) == {f"student reflow (euler@{g})" for g in grids}
    assert [k for k, _ in calls].count(1) == 1  # 1 step is sigma_max -> 0 on every grid
    assert len({rows[f"student reflow (euler@{g})"]["1"] for g in grids}) == 1
    four = [rows[f"student reflow (euler@{g})"]["4"] for g in grids]
    assert len(set(four)) == len({g for k, g in calls if k == 4}) == 3  # distinct 4-step grids: one sampling each
