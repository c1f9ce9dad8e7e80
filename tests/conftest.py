"""Shared fixtures: compose the real Hydra config, shrunk for CPU, with outputs under tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import difflab.cli  # noqa: F401  (registers the config resolvers)
from difflab.utils.config import conf_dir

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("DIFFLAB_OFFLINE", "1")  # metric weights: never try the network in tests
os.environ.pop("DIFFLAB_ALLOW_DOWNLOAD", None)

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["slow_limit"]  # tests/slow_limit.py: an unmarked test past 15 s fails
CONF = conf_dir()  # the one lookup every entry point uses: conf/ of this checkout (or $DIFFLAB_CONF)

@pytest.fixture(autouse=True)
def _no_hydra_state_between_tests():
    """difflab.compose records the run's Hydra choices globally, as a real run has them; a test's choices
    (model=ldm, ...) must not reach the next test."""
    yield
    HydraConfig.instance().cfg = None


# A UNet small enough that a training step takes milliseconds on a laptop CPU.
TINY_NET = [
    "model.net.base_channels=8",
    "model.net.channel_mult=[1,2]",
    "model.net.num_res_blocks=1",
    "model.net.attention_resolutions=[${model.net.resolution}]",
    "model.net.num_heads=1",
]


def compose_config(name: str, overrides: list[str], root: Path) -> DictConfig:
    """Compose conf/<name>.yaml with overrides; all paths point into `root`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=[f"paths.root_dir={root}", f"paths.run_dir={root}/run", *overrides])


@pytest.fixture
def train_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose('train') with the tiny net, CSV logging and the one-batch debug preset by default."""

    def make(*overrides: str, tiny: bool = True, debug: str | None = "fast", logger: str = "csv") -> DictConfig:
        extra = ([f"debug={debug}"] if debug else []) + [f"logger={logger}"] + (TINY_NET if tiny else [])
        return compose_config("train", [*extra, *overrides], tmp_path)

    return make


STUDIO_RUN = ["model=cond_vector", "model.net.emb_channels=32", "data=shapes", "data.resolution=8",
              "data.num_samples=64", "debug=fast", "logger=csv", *TINY_NET, "metrics=fast", "metrics.n_samples=4",
              "metrics.batch_size=4", "metrics.fid=false", "metrics.kid=false", "metrics.inception_score=false",
              "metrics.lpips_diversity=false", "metrics.clip_score=false", "metrics.condition_accuracy=false",
              "metrics.cond_mae=false"]


@pytest.fixture(scope="session")
def studio_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny vector-conditioned run (shapes, 8 px) with a metrics.json, at <root>/runs/train/tiny, for the
    studio's tests: {"root", "run_dir", "ckpt"}."""
    from difflab.cli import train
    from difflab.utils.config import compose as compose_run

    root = tmp_path_factory.mktemp("studio")
    done = train.run(compose_run("train", [f"paths.root_dir={root}", *STUDIO_RUN], root / "runs" / "train" / "tiny"))
    return {"root": root, "run_dir": Path(done["run_dir"]), "ckpt": Path(done["last_ckpt"])}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the folder of test artifacts (the studio's browser screenshots) when a test wrote any."""
    artifacts = REPO / "test-artifacts"
    if artifacts.is_dir() and any(artifacts.rglob("*.png")):
        terminalreporter.write_line(f"test artifacts (screenshots): {artifacts}")
