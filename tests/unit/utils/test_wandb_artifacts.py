"""W&B beyond scalars, read back from the offline runs' transaction logs (`run-<id>.wandb`): the training run's
last/best checkpoints as artifacts, the evaluation and sampling runs linked to it (same group, its id and artifact in
their config), and Tables of samples with an image column (final metric pass, evaluate.py, sample.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY_NET, compose_config
from difflab.utils.wandb_history import read_records, run_logs

pytest.importorskip("wandb")


def records(save_dir: Path, run_id: str, timeout: float = 60.0) -> list[Any]:
    """The records of the run's transaction logs, once the last one ends with the run's exit record (W&B's service
    writes the file behind the client: `finish()` can return before the tail is on disk)."""
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while True:
        out = []
        for path in run_logs(save_dir / "wandb", run_id):
            for raw in read_records(path):
                record = pb.Record()
                record.ParseFromString(raw)
                out.append(record)
        if (out and out[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def read_run(save_dir: Path) -> dict[str, Any]:
    """Group, config, artifacts and history keys of the W&B run whose id is in <save_dir>/wandb_id.txt."""
    run_id = (save_dir / "wandb_id.txt").read_text().strip()
    out: dict[str, Any] = {"id": run_id, "config": {}, "artifacts": [], "history": set()}
    for record in records(save_dir, run_id):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["group"] = record.run.run_group
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "artifact":
            a = record.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "aliases": set(a.aliases),
                                     "files": [e.path for e in a.manifest.contents]})
        elif kind == "history":
            out["history"].update(i.key or "/".join(i.nested_key) for i in record.history.item)
    return out


def logged_table(run: dict[str, Any]) -> bool:
    """Whether the run's history holds `samples/table` (a Table is logged as nested keys: its file, type, ...)."""
    return any(key.startswith("samples/table/") for key in run["history"])


def table_columns(save_dir: Path) -> list[list[str]]:
    """The columns of every Table file the runs under save_dir wrote."""
    return [json.loads(p.read_text())["columns"] for p in (save_dir / "wandb").glob("*/files/media/table/**/*.table.json")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-step run logged to W&B offline, its metric pass (samples/sec only: no Inception weights) at the end."""
    from difflab.cli import train

    root = tmp_path_factory.mktemp("wandb")
    train.run(compose_config("train", ["debug=fast", "logger=wandb", "metrics=fast", "metrics.n_samples=2",
                                       "metrics.batch_size=2", *TINY_NET], root))
    return root / "run"


def test_training_logs_last_and_best_checkpoints_as_artifacts_offline(trained):
    run = read_run(trained)
    assert run["group"] == run["id"]  # a single run's group is its id: its evaluations join it
    models = [a for a in run["artifacts"] if a["type"] == "model"]
    assert {a["name"] for a in models} == {f"model-{run['id']}"}
    assert set().union(*(a["aliases"] for a in models)) >= {"latest", "last", "best"}
    assert all(a["files"] == ["model.ckpt"] for a in models)
    assert logged_table(run) and ["index", "image"] in table_columns(trained)


def test_evaluation_and_sampling_runs_are_linked_to_the_training_run(trained, tmp_path):
    from difflab.cli import evaluate, sample

    train_run = read_run(trained)
    ckpt = trained / "checkpoints" / "last.ckpt"
    evaluate.run(compose_config("evaluate", [f"ckpt={ckpt}", "metrics=none", "metrics.broken_rate=true", "n_samples=2", "sampler=ddim", "sampler.steps=2",
                                             "logger=wandb", f"paths.run_dir={tmp_path}/eval"], tmp_path))
    sample.run(compose_config("sample", [f"ckpt={ckpt}", "n=2", "sampler=ddim", "sampler.steps=2", "logger=wandb",
                                         f"paths.run_dir={tmp_path}/sample", f"out_dir={tmp_path}/sample"], tmp_path))
    for folder in (tmp_path / "eval", tmp_path / "sample"):
        run = read_run(folder)
        assert run["id"] != train_run["id"] and run["group"] == train_run["group"]
        assert run["config"]["train_run_id"] == train_run["id"]
        assert run["config"]["train_artifact"] == f"model-{train_run['id']}:last"
        assert run["config"]["train_checkpoint"] == str(ckpt.resolve())
        assert logged_table(run) and ["index", "image"] in table_columns(folder)


def test_online_runs_declare_the_checkpoint_artifact_as_input():
    from difflab.utils.wandb_artifacts import link_training_run

    class Run:
        def __init__(self) -> None:
            self.config, self.used = {}, []

    class Config(dict):
        def update(self, values: dict, allow_val_change: bool = False) -> None:  # wandb's signature
            super().update(values)

    run = Run()
    run.config = Config()
    run.use_artifact = lambda name, type=None: run.used.append((name, type))  # noqa: A002
    logger = type("Logger", (), {"experiment": run, "_offline": False})()
    link = {"train_run_id": "abc", "group": "abc", "project": "difflab", "train_checkpoint": "/r/last.ckpt",
            "train_artifact": "model-abc:last"}
    link_training_run(logger, link)
    assert run.used == [("difflab/model-abc:last", "model")] and run.config["train_run_id"] == "abc"
    logger._offline, run.used = True, []
    link_training_run(logger, link)
    assert run.used == []  # wandb refuses use_artifact offline ("Cannot use artifact when in offline mode")
