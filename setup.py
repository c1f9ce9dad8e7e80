"""The one build step pyproject.toml cannot declare: the configs of `conf/` ship inside the package.

`conf/` at the repository root stays the only source of the configs; building a wheel (`pip wheel .`, `python -m
build`) copies it into the wheel as `difflab/conf`, where `difflab.utils.config.conf_dir()` finds it once the
package is installed. An editable install reads `conf/` of the checkout instead.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildPyWithConf(build_py):
    """`build_py`, then `conf/` -> `<build_lib>/difflab/conf` (replacing what an earlier build left there)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "difflab" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConf})
