"""The command lines and Python blocks of README.md and docs/, and a lab that runs them at tiny size.

Used by tests/e2e/test_documented_commands.py, which holds the table that classifies every documented command
(`Run`: how it is made tiny; `Skip`: why it cannot run here) and the fixtures its placeholders stand for.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cli_runner import Client

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
SHELL = {"", "bash", "sh", "shell", "console"}
# what a documented command line starts with (after VAR=value assignments)
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:python3? (?:-m (?:difflab|pytest|mkdocs)\b|\S+\.py\b)|difflab-\w+|sbatch\b"
                     r"|mkdocs\b|lint-imports\b|pytest\b)")


def doc_pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def shell_lines(text: str) -> list[str]:
    """The lines of a page's shell blocks (bash, sh or none), `\\` continuations joined, `# comments` dropped."""
    lines = []
    for lang, body in FENCE.findall(text):
        if lang in SHELL:
            for line in re.sub(r"\\\n\s*", " ", body).splitlines():
                line = re.sub(r"(^|\s)#.*$", "", line).strip()
                lines.append(re.sub(r"\s+", " ", line))
    return lines


def documented_commands() -> dict[str, list[str]]:
    """Every documented command line -> the pages that show it (`a && b` gives two commands)."""
    found: dict[str, list[str]] = {}
    for page in doc_pages():
        for line in shell_lines(page.read_text()):
            for part in line.split(" && "):
                if COMMAND.match(part.strip()):
                    found.setdefault(part.strip(), []).append(page.relative_to(REPO).as_posix())
    return found


def python_blocks() -> dict[str, str]:
    """Each page with ```python blocks -> their source, in order (one session per page)."""
    blocks = {}
    for page in doc_pages():
        sources = [body for lang, body in FENCE.findall(page.read_text()) if lang == "python"]
        if sources:
            blocks[page.relative_to(REPO).as_posix()] = "\n".join(sources)
    return blocks


@dataclass
class Run:
    """How a documented command runs at tiny size, and what it must leave behind."""

    expect: tuple[str, ...]                       # globs in its folder that must match once it has run
    extra: tuple[str, ...] = ()                   # arguments appended (Hydra: later values win)
    subs: dict[str, str] = field(default_factory=dict)  # documented text -> replacement; `{name}`: a fixture's path
    files: dict[str, str] = field(default_factory=dict)  # path in its folder -> fixture linked there ("copy:name")
    folder: str | None = None                     # a folder shared with the commands it follows (default: its own)
    after: tuple[str, ...] = ()                   # documented commands that must have run first
    needs: str | None = None                      # "a GPU", "4 GPUs", "the FID Inception weights"
    interrupt_first: dict | None = None           # run once without resume=true, interrupted when the glob matches
    check: Callable[[Path], None] | None = None   # more assertions on its folder


@dataclass
class Skip:
    """A documented command that does not run here, and why."""

    reason: str


@dataclass
class Session:
    """The Python blocks of a page as one script, with sizes replaced (`subs`: each must still be in the page)."""

    expect: tuple[str, ...]
    subs: dict[str, str] = field(default_factory=dict)
    folder: str | None = None
    after: tuple[str, ...] = ()


def fields(text: str) -> list[str]:
    """The fixture names of a `{name}` template."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


class Lab:
    """Runs documented commands in folders under `root` through one warm tests/cli_runner.py process, builds the
    fixtures their placeholders stand for on first use, and remembers what ran."""

    def __init__(self, root: Path, env: dict[str, str], table: dict, fixtures: dict[str, Callable[[Lab], Path]]):
        self.root, self.env, self.table, self.builders = root, env, table, fixtures
        self.client = Client(root, env)
        self.built: dict[str, Path] = {}
        self.ran: dict[str, Path] = {}
        self.needs_env: dict[str, dict[str, str]] = {}  # what = Run.needs adds to a command's environment

    def close(self) -> None:
        self.client.close()

    def fixture(self, name: str) -> Path:
        """A fixture's path, made on first use; `name/sub/path` is a path inside it."""
        name, _, inside = name.partition("/")
        if name not in self.built:
            self.built[name] = self.builders[name](self)
        return self.built[name] / inside if inside else self.built[name]

    def fill(self, text: str) -> str:
        """`text` with every `{name}` replaced by that fixture's path."""
        return text.format(**{name: self.fixture(name) for name in fields(text)})

    def folder(self, command: str) -> Path:
        """Where a documented command runs: its entry's shared folder, else one of its own."""
        entry = self.table[command]
        name = entry.folder or f"c{list(self.table).index(command):03d}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def call(self, argv: list[str], folder: Path, env: dict[str, str] | None = None, **extra: object) -> dict:
        """Run argv (a script or `-m module` and its arguments) in `folder`; the answer has rc, stdout, stderr."""
        folder.mkdir(parents=True, exist_ok=True)
        return self.client.run(argv, folder, timeout=900, env=env or {}, **extra)

    def ensure(self, command: str) -> Path:
        """Run a documented command once (after the commands it follows); returns its folder."""
        if command not in self.ran:
            entry = self.table[command]
            for before in entry.after:
                self.ensure(before)
            folder = self.folder(command)
            for dest, name in entry.files.items():
                place(self.fixture(name.removeprefix("copy:")), folder / dest, copy=name.startswith("copy:"))
            env, argv = split_command(self.apply(command, entry.subs))
            env.update(self.needs_env.get(entry.needs or "", {}))
            argv += [self.fill(a) for a in entry.extra]
            if entry.interrupt_first:
                interrupted(self, [a for a in argv if a != "resume=true"], folder, env, entry.interrupt_first)
            answer = self.call(argv, folder, env)
            assert answer["rc"] == 0, f"{command}\n-> {shlex.join(argv)}\nexit {answer['rc']}:\n{answer['stderr'][-5000:]}"
            for pattern in entry.expect:
                assert list(folder.glob(pattern)), f"{command}: nothing matches {pattern} in {folder}"
            if entry.check is not None:
                entry.check(folder)
            self.ran[command] = folder
        return self.ran[command]

    def apply(self, text: str, subs: dict[str, str]) -> str:
        """`text` with each documented placeholder replaced (each must be in it: docs that changed fail here)."""
        for old, new in subs.items():
            assert old in text, f"{old!r} is no longer in {text!r}: update the table"
            text = text.replace(old, self.fill(new))
        return text


def interrupted(lab: Lab, argv: list[str], folder: Path, env: dict[str, str], interrupt: dict) -> None:
    """Run argv and interrupt it as a user would (the signal once the glob matches); it must say how to go on."""
    answer = lab.call(argv, folder, env, interrupt=interrupt)
    assert answer["rc"] == 128 + interrupt["signal"], answer["stderr"][-3000:]
    assert "resume=true" in answer["stderr"], answer["stderr"][-3000:]


def split_command(command: str) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, argv after `python`) of a documented `[VAR=value ...] python ...` line."""
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if not words or words[0] not in ("python", "python3"):
        raise ValueError(f"{command!r} is not a `python ...` command: classify it as a Skip")
    return env, words[1:]


def place(source: Path, dest: Path, copy: bool = False) -> None:
    """Link `source` at `dest` (or copy it, for a command that changes it)."""
    if dest.exists() or dest.is_symlink():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        os.symlink(source, dest)
    elif source.is_dir():
        shutil.copytree(source, dest)
    else:
        shutil.copy2(source, dest)
