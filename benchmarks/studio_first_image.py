"""How long a new user waits from `python studio.py` to a generated image (docs/studio.md).

    python benchmarks/studio_first_image.py --root <folder with runs/> [--sampler "DPM++ 2M Karras" --steps 20]

Starts `python studio.py paths.root_dir=<root> port=0` as a user would, opens the page in headless Chromium
(`/usr/bin/chromium`, driven by Playwright), picks the newest checkpoint, presses Generate with the page's
defaults (or the given sampler and steps) and waits for the images. Prints the seconds from the launch to:
the URL printed, the page loaded, the model loaded, the images shown; and saves a screenshot next to --shot.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def status(page, before: str) -> str:
    """The Sample tab's status line once it differs from `before`."""
    page.wait_for_function("old => !['', old].includes(document.querySelector('#sample-status textarea').value)",
                           arg=before, timeout=900_000)
    return page.input_value("#sample-status textarea")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="paths.root_dir: the folder holding runs/")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--shot", default=str(REPO / "test-artifacts" / "studio" / "first_image.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, str(REPO / "studio.py"), f"paths.root_dir={args.root}", "port=0"],
                            cwd=args.root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while "open http" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise SystemExit(f"studio.py exited with {proc.returncode}")
        url = line.split("open ", 1)[1].split()[0]
        times = {"url printed": time.perf_counter() - t0}
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(tempfile.mkdtemp(), headless=True, args=FLAGS,
                                                            executable_path="/usr/bin/chromium",
                                                            viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(900_000)
            page.goto(url)
            page.wait_for_selector("#model input")
            times["page loaded"] = time.perf_counter() - t0
            page.click("#model input")
            page.get_by_role("option").filter(has_text="last.ckpt").first.click()
            print("model:", status(page, ""))
            times["model loaded"] = time.perf_counter() - t0
            if args.sampler:
                page.fill("#sampler input", args.sampler)
                page.get_by_role("option").filter(has_text=args.sampler).first.click()
            if args.steps:
                page.fill("#steps input", str(args.steps))
            page.click("#generate")
            print("result:", status(page, "Model loaded."))
            page.wait_for_selector("#images img")
            times["images shown"] = time.perf_counter() - t0
            Path(args.shot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.shot, full_page=True)
            print("command:", page.input_value("#command textarea"))
            context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for what, seconds in times.items():
        print(f"{what}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
