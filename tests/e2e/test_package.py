"""The built wheel works on its own: configs inside the package, console scripts that train and sample.

The wheel is built from a copy of the package sources (nothing is written into the checkout), installed
without dependencies into a throwaway folder (`pip install --no-deps --target`: torch and the rest come from the
current environment, nothing is downloaded), and the console scripts run from an empty working directory with
only that folder on PYTHONPATH, so `difflab` and its configs must come from the wheel, never from `src/` or `conf/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import CONF, REPO, TINY_NET

SOURCES = ["src", "conf", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"]
SCRIPTS = ["difflab-train", "difflab-sample", "difflab-evaluate", "difflab-compare", "difflab-export", "difflab-predict",
           "difflab-studio"]

CHECK = """
import importlib.util
from importlib.metadata import entry_points

print(importlib.util.find_spec("difflab").origin)  # where `import difflab` would come from (without importing torch)
print({e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("difflab-")})
"""


def pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources and installed into `<tmp>/site` (scripts in `<tmp>/site/bin`)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"), ".", cwd=src)
    (wheel,) = (root / "dist").glob("difflab-*.whl")
    pip("install", "--no-deps", "--no-compile", "-q", "--target", str(root / "site"), str(wheel), cwd=root)
    return root / "site"


def env_for(site: Path) -> dict[str, str]:
    """Only the wheel's folder on PYTHONPATH (not this checkout's src), no DIFFLAB_CONF."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DIFFLAB_CONF")}
    env.update(PYTHONPATH=str(site), WANDB_MODE="offline", DIFFLAB_OFFLINE="1")
    return env


def run(site: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, env=env_for(site), capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_every_config_the_license_and_py_typed(installed: Path) -> None:
    (wheel,) = (installed.parent / "dist").glob("difflab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"difflab/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert configs and configs <= names, sorted(configs - names)
    assert "difflab/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "Classifier: Typing :: Typed" in metadata


@pytest.mark.slow  # a subprocess or a multi-run: over 5 s on 2 cores
def test_console_scripts_train_and_sample_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    check = run(installed, work, sys.executable, "-c", CHECK)
    assert check.returncode == 0, check.stderr
    module_file, scripts = check.stdout.splitlines()[-2:]
    assert Path(module_file).is_relative_to(installed), f"difflab imported from {module_file}, not from the wheel"
    for name in SCRIPTS:
        module = "difflab.studio.server" if name == "difflab-studio" else f"difflab.cli.{name.removeprefix('difflab-')}"
        assert f"'{name}': '{module}:main'" in scripts, scripts
        assert (installed / module.replace(".", "/")).with_suffix(".py").is_file()
    bin_dir = installed / "bin"

    train = run(installed, work, str(bin_dir / "difflab-train"), "debug=fast", "logger=csv", "metrics=none",
                "sampler=Euler a", *TINY_NET)  # a web UI name: group_aliases runs in the console script too
    assert train.returncode == 0, train.stderr[-3000:]
    (run_dir,) = (work / "runs" / "train").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "train.log").is_file()
    assert f"path: {installed / 'difflab' / 'conf'}\n" in (run_dir / ".hydra" / "hydra.yaml").read_text()  # the configs of the wheel
    assert "name: euler_a" in (run_dir / "config.yaml").read_text()

    sample = run(installed, work, str(bin_dir / "difflab-sample"), f"ckpt={run_dir}/checkpoints/last.ckpt", "n=2",
                 "sampler=ddim", "sampler.steps=2", "out_dir=samples")
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert sorted(p.name for p in (work / "samples" / "images").iterdir()) == ["000000.png", "000001.png"]


def test_conf_dir_is_the_checkout_conf_or_difflab_conf_and_a_bad_one_is_a_user_error(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from difflab.errors import MissingFileError
    from difflab.utils.config import conf_dir

    monkeypatch.delenv("DIFFLAB_CONF", raising=False)
    assert conf_dir() == REPO / "conf" == CONF
    monkeypatch.setenv("DIFFLAB_CONF", str(tmp_path))
    with pytest.raises(MissingFileError, match="DIFFLAB_CONF"):
        conf_dir()
