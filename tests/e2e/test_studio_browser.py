"""The studio in a real browser: Debian's Chromium, headless, driven by Playwright (nothing downloaded).

One tiny vector-conditioned checkpoint is trained for the session (conftest's `studio_run`) and the studio is
served from this process on a free port of 127.0.0.1. The page is opened, the checkpoint picked, images generated;
the command the page shows is run as `python sample.py ...` and must give the same PNGs; the Runs tab must list
the run; user errors, a long generation and its Stop button are tried. Screenshots
go to test-artifacts/studio/ (printed at the end of the session). Every outgoing connection of this process and
every request of the page is recorded: none may leave 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO, compose_config

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip("the browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)",
                allow_module_level=True)
pytest.importorskip("gradio", reason="the studio needs Gradio (pip install -e '.[studio]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright's Python package")

ARTIFACTS = REPO / "test-artifacts" / "studio"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT = 60_000  # ms: a loaded CI machine samples slowly
pytestmark = pytest.mark.slow  # a Chromium and a trained run: 20 s on 2 cores (the whole suite runs them)


class Connections:
    """Every address this process connects a socket to (Gradio's server, its threads, difflab)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def outside(self) -> list[Any]:
        """Connections to anything but this machine's loopback (or a Unix socket)."""
        out = []
        for address in self.seen:
            if isinstance(address, tuple) and address and address[0] not in ("127.0.0.1", "::1", "localhost"):
                out.append(address)
        return out


@pytest.fixture(scope="module")
def connections() -> Iterator[Connections]:
    spy, real = Connections(), socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        spy.seen.append(address)
        return real(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        yield spy


class Replay:
    """`python <script> <args>` run as written, in children forked from one warm `tests/cli_runner.py` process,
    started first so that its imports overlap the training and the page."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "offline"}
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "cli_runner.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.ready = False

    def __call__(self, argv: list[str], cwd: Path) -> dict[str, Any]:
        if not self.ready:
            assert json.loads(self.proc.stdout.readline()) == {"ready": True}
            self.ready = True
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "timeout": 240}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def studio(studio_run: dict[str, Path], connections: Connections) -> Iterator[dict[str, Any]]:
    """The session's tiny vector-conditioned run under <root>/runs and the studio serving <root> on a free port."""
    from difflab.studio.server import serve

    replay = Replay()
    root = studio_run["root"]
    cfg = compose_config("studio", ["port=0", f"out_dir={root}/runs/browser"], root)
    demo, url = serve(cfg)
    try:
        yield {**studio_run, "url": url, "out_dir": Path(cfg.out_dir), "replay": replay}
    finally:
        demo.close()
        replay.close()


@pytest.fixture(scope="module")
def page(studio: dict[str, Any]) -> Iterator[Any]:
    """One headless Chromium page on the studio (a fresh profile); every request's host is recorded."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(tempfile.mkdtemp(prefix="chromium-"), headless=True,
                                                        executable_path=str(CHROMIUM), args=FLAGS,
                                                        viewport={"width": 1400, "height": 1000})
        tab = context.new_page()
        tab.hosts = set()
        tab.on("request", lambda r: tab.hosts.add(r.url.split("/")[2]))
        open_page(tab, studio["url"])
        try:
            yield tab
        finally:
            context.close()


def open_page(tab: Any, url: str) -> None:
    """Open the studio in `tab` and wait for the page to settle: it opens with the newest last.ckpt picked and
    loading, and a pick made before that load has answered could be the same value (no change event) or be
    overwritten by it."""
    tab.set_default_timeout(WAIT)
    tab.goto(url)
    tab.wait_for_function("document.querySelector('#sample-status textarea')?.value === 'Model loaded.'")


def text_of(page: Any, elem_id: str) -> str:
    """The value of a Gradio Textbox."""
    return page.input_value(f"#{elem_id} textarea")


def wait_text(page: Any, elem_id: str, not_in: tuple[str, ...] = ("",)) -> str:
    """Wait until a Textbox holds something other than `not_in`; return it."""
    page.wait_for_function("([id, old]) => !old.includes(document.querySelector(`#${id} textarea`).value)",
                           arg=[elem_id, list(not_in)])
    return text_of(page, elem_id)


def next_status(page: Any, action: Any) -> str:
    """The Sample tab's status line once `action()` has changed it."""
    before = text_of(page, "sample-status")
    action()
    return wait_text(page, "sample-status", ("", before))


def pick(page: Any, elem_id: str, typed: str, option: str | None = None) -> None:
    """Type into a Gradio Dropdown, then click the menu's option holding `option` (or, without one, take the typed
    value itself, as a path typed by hand)."""
    page.click(f"#{elem_id} input")
    page.fill(f"#{elem_id} input", typed)
    if option is None:
        page.keyboard.press("Enter")
    else:
        page.get_by_role("option").filter(has_text=option).first.click()


def pngs(folder: Path) -> list[np.ndarray]:
    from difflab.studio.files import png

    return [png(p) for p in sorted((folder / "images").glob("*.png"))]


def load(page: Any, name: str) -> None:
    """Pick the run's checkpoint `name` (last.ckpt, best.ckpt) in the Sample tab and wait for the model's description
    to name it with the status "Model loaded."; nothing when it is the model loaded already (a pick of the same value
    changes nothing, so no status would come)."""
    if page.input_value("#model input").endswith(name) and text_of(page, "sample-status") == "Model loaded.":
        return
    pick(page, "model", name.split(".")[0], name)
    page.wait_for_function("([name]) => document.querySelector('#model-info').innerText.includes(name) && "
                           "document.querySelector('#sample-status textarea').value === 'Model loaded.'", arg=[name])


def test_pick_generate_and_the_command_reproduces_it(page: Any, studio: dict[str, Any]) -> None:
    assert page.input_value("#model input").endswith("last.ckpt")  # the page opened with the newest last.ckpt
    load(page, "best.ckpt")  # another checkpoint of the run, picked from the menu
    sliders = page.locator("[id^=cond-]:visible")
    assert sliders.count() == 8  # one per column of the shapes data: cx, cy, size, ...
    page.fill("#cond-0 input[type=number]", "0.25")
    page.press("#cond-0 input[type=number]", "Enter")
    page.fill("#steps input", "3")
    status = next_status(page, lambda: page.click("#generate"))
    assert status.startswith("4 images"), status
    page.wait_for_selector("#images img")
    page.screenshot(path=str(ARTIFACTS / "sample.png"), full_page=True)
    seed, command = text_of(page, "seed-used"), text_of(page, "command")
    assert int(seed) >= 0 and f"seed={seed}" in command and "cond={cx: 0.25, cy: " in command, command
    assert len(page.query_selector_all("#images img")) == 4
    shown = sorted(studio["out_dir"].glob("0*"))[-1]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "sample.py"]
    cwd = studio["root"] / "replay"
    cwd.mkdir()
    done = studio["replay"](argv[1:], cwd)
    assert done["rc"] == 0, done["stderr"][-3000:]
    replayed = next((cwd / "runs" / "sample").glob("*"))
    ours, theirs = pngs(shown), pngs(replayed)
    assert len(ours) == len(theirs) == 4
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs)), "the command gave other images"


def test_runs_tab_lists_the_run(page: Any, studio: dict[str, Any]) -> None:
    page.get_by_role("tab", name="Runs").click()
    page.click("#reload")
    page.wait_for_function("document.querySelector('#runs-table').innerText.includes('runs/train/tiny')")
    table = page.inner_text("#runs-table")
    assert "cond_vector" in table and "ddpm_linear" in table and "shapes 8px" in table, table
    assert wait_text(page, "runs-status") == "1 run."
    page.locator("#runs-table [role=gridcell]", has_text="runs/train/tiny").first.click()
    page.wait_for_selector("#run-grid img")
    assert "final sample grid" in text_of(page, "runs-status")
    page.screenshot(path=str(ARTIFACTS / "runs.png"), full_page=True)
    page.get_by_role("tab", name="Sample").click()


def test_user_errors_are_the_cli_paragraph(page: Any, studio: dict[str, Any], tmp_path: Path) -> None:
    from difflab.cli.sample import run
    from difflab.errors import user_message

    missing = studio["root"] / "runs" / "nope.ckpt"
    with pytest.raises(Exception) as cli:
        run(compose_config("sample", [f"ckpt={missing}"], tmp_path))
    shown = next_status(page, lambda: pick(page, "model", str(missing)))
    assert shown == f"Error: {user_message(cli.value)}"
    outside = tmp_path / "elsewhere.ckpt"
    outside.write_bytes(b"")
    (studio["root"] / "runs" / "link.ckpt").symlink_to(outside)
    for path in (str(outside), f"{studio['root']}/runs/../../{tmp_path.name}/elsewhere.ckpt",
                 str(studio["root"] / "runs" / "link.ckpt")):
        assert next_status(page, lambda: pick(page, "model", "last", "last.ckpt")) == "Model loaded."
        shown = next_status(page, lambda: pick(page, "model", path))
        assert shown.startswith(f"Error: The checkpoint '{path}' is outside the folders this studio serves"), shown
    page.screenshot(path=str(ARTIFACTS / "error.png"), full_page=True)
    assert "Traceback" not in page.content()


def test_nothing_leaves_the_machine(page: Any, studio: dict[str, Any], connections: Connections) -> None:
    import urllib.request
    from urllib.error import HTTPError

    assert page.hosts and all(h.split(":")[0] == "127.0.0.1" for h in page.hosts), page.hosts
    assert connections.outside() == []
    secret = studio["root"] / "secret.txt"
    secret.write_text("not served")
    for path in (secret, studio["ckpt"], Path("/etc/hostname")):
        with pytest.raises(HTTPError):
            urllib.request.urlopen(f"{studio['url']}gradio_api/file={path}", timeout=10)


def test_a_long_generation_shows_progress_and_stops(page: Any, studio: dict[str, Any]) -> None:
    load(page, "last.ckpt")
    page.fill("#steps input", "1000")
    page.fill("#n input[type=number]", "64")
    page.press("#n input[type=number]", "Enter")
    before = set(studio["out_dir"].glob("0*"))
    page.click("#generate")
    try:
        page.wait_for_selector("text=/\\d+\\.\\d\\/64 images/")
    except Exception:  # what the page showed instead, as a test artifact
        page.screenshot(path=str(ARTIFACTS / "progress-missing.png"), full_page=True)
        raise
    page.screenshot(path=str(ARTIFACTS / "progress.png"), full_page=True)
    assert next_status(page, lambda: page.click("#stop")) == "Cancelled."
    time.sleep(1.0)
    (folder,) = set(studio["out_dir"].glob("0*")) - before
    assert not (folder / "grid.png").exists(), "the cancelled generation ran to its end"


class FreshTab:
    """A second tab on the studio, as a new visitor opens it (nothing picked or typed), closed at the end."""

    def __init__(self, page: Any, url: str) -> None:
        self.tab = page.context.new_page()
        open_page(self.tab, url)

    def __enter__(self) -> Any:
        return self.tab

    def __exit__(self, *exc: Any) -> None:
        self.tab.close()


def test_a_fresh_page_opens_with_the_newest_last_ckpt_loaded(page: Any, studio: dict[str, Any]) -> None:
    with FreshTab(page, studio["url"]) as tab:  # "Model loaded." without a click
        assert tab.input_value("#model input").endswith("last.ckpt"), tab.input_value("#model input")
        assert tab.locator("[id^=cond-]:visible").count() == 8  # the loaded model's sliders
        tab.screenshot(path=str(ARTIFACTS / "preselected.png"), full_page=True)


def test_a_picked_sampler_sets_its_usual_steps_unless_steps_were_typed(page: Any, studio: dict[str, Any]) -> None:
    from difflab.api.config import sampler_spec

    usual = sampler_spec("DPM++ 2M Karras").steps
    assert usual and usual < 100  # the preset's few steps, not the checkpoint's 1000
    with FreshTab(page, studio["url"]) as tab:
        assert int(float(tab.input_value("#steps input"))) != usual  # the checkpoint's own sampler and steps first
        pick(tab, "sampler", "DPM++ 2M Karras", "DPM++ 2M Karras")
        tab.wait_for_function(f"Number(document.querySelector('#steps input').value) === {usual}")
        tab.fill("#steps input", "7")  # typed by the user: kept from now on
        pick(tab, "sampler", "Euler a", "Euler a")
        time.sleep(2.0)  # the change event has had its round trip
        assert tab.input_value("#steps input") == "7"
