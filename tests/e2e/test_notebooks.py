"""The tutorials in notebooks/: stored without outputs, linked from the README, and each runs top to bottom.

Each notebook is executed in smoke mode (`DIFFLAB_SMOKE=1`: tiny sizes, a few training steps) in a fresh
kernel whose working directory is a temporary folder, so nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO
from difflab.utils import notebooks
from fakes import ASSETS

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_the_readme_links_each() -> None:
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if f"notebooks/{p.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_notebooks_have_no_outputs_and_a_smoke_switch(path: Path) -> None:
    nb = notebooks.read(path)
    assert notebooks.dirty_cells(nb) == [], f"run `python -m difflab.utils.notebooks strip {path.relative_to(REPO)}`"
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert 'SMOKE = os.environ.get("DIFFLAB_SMOKE", "0") == "1"' in "".join(first_code["source"])


def test_strip_removes_outputs_counts_and_run_metadata(tmp_path: Path) -> None:
    cell = {"cell_type": "code", "execution_count": 3, "metadata": {"execution": {"t": 1}, "tags": ["keep"]},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi"}], "source": "print('hi')"}
    md = {"cell_type": "markdown", "metadata": {}, "source": "# title"}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [md, cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert notebooks.main(["check", str(path)]) == 1
    assert notebooks.main(["strip", str(path)]) == 0
    nb = notebooks.read(path)
    assert nb["cells"][1]["outputs"] == [] and nb["cells"][1]["execution_count"] is None
    assert nb["cells"][1]["metadata"] == {"tags": ["keep"]} and nb["cells"][0] == md
    assert notebooks.main(["check", str(path)]) == 0
    with pytest.raises(ValueError, match="nb.txt.: not notebook JSON"):
        (tmp_path / "nb.txt").write_text("{")
        notebooks.read(tmp_path / "nb.txt")


def test_compose_records_the_choices_like_a_hydra_run(tmp_path: Path) -> None:
    from difflab.utils.config import compose, config_choices

    cfg = compose("train", ["model=ddim", "experiment=tutorial_digits"], tmp_path / "run")
    assert cfg.paths.run_dir == str((tmp_path / "run").resolve()) and "hydra" not in cfg
    assert cfg.sampler.name == "ddim" and cfg.model.net.base_channels == 32
    assert config_choices()["model"] == "ddim" and config_choices()["experiment"] == "tutorial_digits"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_smoke_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat (dev extra) reads the notebooks")
    nbclient = pytest.importorskip("nbclient", reason="nbclient (dev extra) executes the notebooks")
    monkeypatch.setenv("DIFFLAB_SMOKE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors: one thread is as fast, and robust on a busy CI machine
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    if ASSETS.is_dir():  # the real metric weights, when this machine has them (see ../shared/assets/README.md)
        monkeypatch.setenv("DIFFLAB_ASSETS", str(ASSETS))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell and the traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
