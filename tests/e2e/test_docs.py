"""The documentation: the MkDocs site in docs/ builds with --strict, and the README links only files of the repository.

`mkdocs build --strict` fails on a broken link or anchor between pages, a page missing from the nav in
mkdocs.yml, and an API-reference entry (`::: difflab.x`) that no longer resolves.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings", reason="mkdocs and mkdocstrings[python] come with the dev extra")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    api = (site / "api" / "samplers" / "index.html").read_text()
    assert 'id="difflab.samplers.SamplerSpec"' in api, "the API reference rendered no docstrings"
    assert (site / "metrics" / "index.html").is_file()


def readme_links() -> list[str]:
    return LINK.findall((REPO / "README.md").read_text())


def test_readme_links_only_files_inside_the_repository() -> None:
    links = readme_links()
    assert links, "README.md links nothing"
    for target in links:
        path = target.split("#", 1)[0]
        assert "://" not in target and not target.startswith(("/", "mailto:")), f"README.md links outside: {target}"
        resolved = (REPO / path).resolve()
        assert resolved.is_relative_to(REPO), f"README.md links {target}, outside the repository"
        assert resolved.exists(), f"README.md links {target}, which does not exist"


def test_readme_and_docs_index_give_the_same_set_up_commands() -> None:
    def set_up(text: str) -> list[str]:
        section = text.split("## Set-up", 1)[1]
        return FENCE.findall(section)[:2]

    readme = set_up((REPO / "README.md").read_text())
    assert len(readme) == 2 and "python train.py" in readme[0] and "pytest" in readme[1], readme
    assert set_up((REPO / "docs" / "index.md").read_text()) == readme


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    missing = [p for p in pages if f": {p}" not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"
