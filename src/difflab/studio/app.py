"""The studio's web page (Gradio Blocks): Sample (with its PNG reader and X/Y/Z plot, `panels.py`), Runs and
Measure tabs wired to a `Studio`.

Every event runs under `shown_errors` (`events.py`): a user's mistake becomes the paragraph the CLI prints
(`Error: ...`) in the tab's status line, never a traceback; a bug is logged with its traceback and named as one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from difflab.samplers.aliases import WEBUI_NAMES
from difflab.studio.events import Shown, error_text, shown_errors
from difflab.studio.files import png
from difflab.studio.forms import SampleForm, parse_seed
from difflab.studio.panels import PngPanel, XYZPanel
from difflab.studio.runs import (
    datatypes,
    fid_plot,
    grids_of,
    headers,
    read_runs,
    run_grid,
    table_values,
)
from difflab.studio.service import Cancelled, ModelInfo, Studio
from difflab.studio.slots import (
    MAX_CHOICES,
    MAX_COLUMNS,
    MAX_TEXTS,
    OWN_GRID,
    POOLS,
    slot_update,
    slot_values,
)
from difflab.utils.config import conf_dir

log = logging.getLogger(__name__)

CSS = "#images img, #run-grid img, #side-by-side img {image-rendering: pixelated;}"


def sampler_choices() -> list[str]:
    """The sampler names sample.py accepts: its `conf/sampler` options, then the web UI names (`aliases.py`)."""
    return sorted(p.stem for p in (conf_dir() / "sampler").glob("*.yaml")) + list(WEBUI_NAMES)


class Page:
    """The Gradio components and their events; one per served app."""

    def __init__(self, studio: Studio, demo: gr.Blocks) -> None:
        self.studio, self.demo = studio, demo
        self.stops: dict[str, threading.Event] = {}  # session -> its generation's cancel flag

    # ------------------------------------------------------------------------------------------ Sample tab

    def sample_tab(self) -> None:
        """The Sample tab's components: model, sampler, grid, steps, images, seed, conditions, img2img, results."""
        choices = self.studio.checkpoints()
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    self.model = gr.Dropdown(choices, value=self.studio.default_checkpoint(),
                                             label="Checkpoint or Stable Diffusion folder",
                                             allow_custom_value=True, elem_id="model", scale=5)
                    self.rescan = gr.Button("Rescan", elem_id="rescan", scale=1, size="sm")
                self.info = gr.Markdown("Pick a checkpoint.", elem_id="model-info")
                with gr.Row():
                    self.sampler = gr.Dropdown(sampler_choices(), value=None, label="Sampler", elem_id="sampler")
                    self.grid = gr.Dropdown([OWN_GRID], value=OWN_GRID, label="Noise-level grid", elem_id="grid")
                with gr.Row():
                    self.steps = gr.Number(20, label="Steps", precision=0, minimum=1, elem_id="steps")
                    self.steps_typed = gr.State(False)  # typed by the user: a sampler change keeps it
                    self.n = gr.Slider(1, self.studio.max_images, value=4, step=1, label="Images", elem_id="n")
                    self.seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id="seed")
                self.guidance = gr.Slider(0, 20, value=1, step=0.1, label="Guidance scale", visible=False,
                                          elem_id="guidance")
                # the condition's inputs (`Condition.widgets`), each in a slot of its kind's pool
                self.choices = [gr.Dropdown([], label=f"choice {i}", visible=False, elem_id=f"choice-{i}")
                                for i in range(MAX_CHOICES)]
                self.texts = [gr.Textbox(label=f"text {i}", visible=False, elem_id=f"text-{i}") for i in range(MAX_TEXTS)]
                self.sliders = [gr.Slider(label=f"value {i}", visible=False, elem_id=f"cond-{i}")
                                for i in range(MAX_COLUMNS)]
                with gr.Accordion("img2img: start from an image", open=False):
                    self.init = gr.Image(type="filepath", label="Start image (preprocessed like the training data)",
                                         sources=["upload"], elem_id="init-image")
                    self.strength = gr.Slider(0, 1, value=0.6, step=0.01, label="Strength (1 = from pure noise)")
                with gr.Row():
                    self.go = gr.Button("Generate", variant="primary", elem_id="generate")
                    self.stop = gr.Button("Stop", variant="stop", elem_id="stop")
                self.png = PngPanel(self)
                self.xyz = XYZPanel(self)
            with gr.Column(scale=3):
                self.gallery = gr.Gallery(label="Images", format="png", columns=4, elem_id="images")
                self.seed_used = gr.Textbox(label="Seed used (image i draws its noise from seed and i)",
                                            interactive=False, elem_id="seed-used")
                self.command = gr.Textbox(label="The same images from the command line", interactive=False,
                                          lines=2, elem_id="command", buttons=["copy"])
                self.status = gr.Textbox(label="Status", interactive=False, elem_id="sample-status")
                self.params = gr.Code(label="Parameters (samples.json)", language="json", interactive=False,
                                      elem_id="params")

    @property
    def slots(self) -> list[Any]:
        """Every condition widget, pool by pool (choices, texts, numbers)."""
        return [*self.choices, *self.texts, *self.sliders]

    def condition_updates(self, info: ModelInfo | None) -> list[Any]:
        """Updates of the guidance slider and of every condition slot for a model: its declared inputs
        (`Condition.widgets`) fill the slots of their kind in order, the other slots are hidden."""
        guided = info is not None and info.guided
        out = [gr.update(visible=guided, value=info.guidance_scale if guided else 1.0)]
        for kind, size in POOLS.items():
            declared = [inp for inp in (info.inputs if info is not None else []) if inp.kind == kind][:size]
            out += [slot_update(inp) for inp in declared] + [gr.update(visible=False)] * (size - len(declared))
        return out

    def open_model(self, path: str | None, pending: Any = None) -> list[Any]:
        """The Sample tab after picking a model: its description, defaults and condition inputs, then the images,
        seed and img2img fields and the cleared `pending` PNG; a dropped PNG's fields (`pending`) for this model are
        filled in instead of the defaults."""
        keep = [gr.update()] * 4 + [None]
        try:
            with shown_errors():
                info = self.studio.open(path) if path else None
        except Shown as err:
            return [gr.update(value="No model loaded."), gr.update(), gr.update(), gr.update(),
                    *self.condition_updates(None), False, str(err), *keep]
        if info is None:
            return [gr.update(), gr.update(), gr.update(), gr.update(), *self.condition_updates(None), False, "", *keep]
        text = (f"**{self.studio.folders.label(info.path)}**: {info.describe}, {info.image_size}px, sampler "
                f"`{info.sampler}`" + (f", {info.steps} steps" if info.steps else ""))
        numbers = sum(inp.kind == "number" for inp in info.inputs)
        if numbers > MAX_COLUMNS:
            text += f". It has {numbers} columns, more than the {MAX_COLUMNS} sliders here: use sample.py."
        if pending is not None and pending.model == info.path:
            fill = self.png.fill(info, pending)
            return [text, *fill[:-4], True, "Model loaded, with the PNG's settings.", *fill[-4:], None]
        return [text, gr.update(value=info.sampler), gr.update(value=info.steps or 1000),
                gr.update(choices=[OWN_GRID, *info.grids], value=OWN_GRID), *self.condition_updates(info), False,
                "Model loaded.", *keep]

    def usual_steps(self, model: str | None, sampler: str | None, typed: bool) -> Any:
        """A picked sampler's usual step count (its preset's; the checkpoint's own for its own sampler), unless the
        user has typed a step count."""
        if typed or not model:
            return gr.update()
        try:
            with shown_errors():
                return gr.update(value=self.studio.usual_steps(model, sampler))
        except Shown:
            return gr.update()  # an unknown sampler name is reported when Generate is pressed

    def form(self, model: str, sampler: str | None, grid: str, steps: Any, n: Any, seed: Any, guidance: Any,
             init: str | None, strength: Any, values: list[Any]) -> SampleForm:
        """The request of the Sample tab's inputs (the seed resolved: -1 draws one; the condition slots read back
        through the model's declared inputs)."""
        info = self.studio.open(model)
        return SampleForm(
            model=info.path, seed=parse_seed(seed), n=int(n), sampler=sampler or None,
            steps=None if steps in (None, "") else int(steps), grid=None if grid == OWN_GRID else grid,
            guidance_scale=float(guidance) if info.guided else None, inputs=slot_values(info.inputs, values),
            init_image=init or None, strength=float(strength), extra=self.studio.extra_overrides())

    def generate(self, request: gr.Request, model: str, sampler: str | None, grid: str, steps: Any, n: Any,
                 seed: Any, guidance: Any, init: str | None, strength: Any, *values: Any,
                 progress: gr.Progress = gr.Progress()) -> list[Any]:
        """Gallery, seed, command, status and parameters of one generation."""
        result = self.job(request, progress, "images", lambda report, stop: self.studio.generate(
            self.form(model, sampler, grid, steps, n, seed, guidance, init, strength, list(values)), report, stop))
        if isinstance(result, list):
            return result
        captions = [(img, f"seed {result.seed} · image {i}") for i, img in enumerate(result.images)]
        done = f"{len(result.images)} images, NFE {result.record.get('nfe')} each, in {result.out_dir}"
        return [captions, str(result.seed), result.command, done, json.dumps(result.record, indent=2)]

    def job(self, request: gr.Request, progress: gr.Progress, unit: str,
            run: Callable[[Callable[[float, float], None], threading.Event], Any]) -> Any:
        """One generation, `run(report, stop)`, with the progress bar (counted in `unit`) and the session's Stop flag;
        its result, or the outputs [gallery, seed, command, status, parameters] of one that failed or was stopped."""
        stop = self.stops.setdefault(request.session_hash or "", threading.Event())
        stop.clear()
        report: Callable[[float, float], None] = lambda done, total: progress(  # noqa: E731
            done / total, desc=f"{done:.1f}/{total:.0f} {unit}")
        try:
            with shown_errors():
                return run(report, stop)
        except Shown as err:
            if isinstance(err.__cause__, Cancelled):
                return [gr.update(), gr.update(), gr.update(), "Cancelled.", gr.update()]
            return [None, "", "", str(err), ""]

    def cancel(self, request: gr.Request) -> str:
        """The Stop button: the running generation stops at its next sampler step."""
        self.stops.setdefault(request.session_hash or "", threading.Event()).set()
        return "Cancelled."

    def wire_sample(self) -> None:
        """Picking a model loads it; Generate samples it (one at a time, with progress); Stop cancels; a dropped PNG
        fills the fields; the X/Y/Z plot draws the request over its keys."""
        pick_outputs = [self.info, self.sampler, self.steps, self.grid, self.guidance, *self.slots, self.steps_typed,
                        self.status, self.n, self.seed, self.init, self.strength, self.png.pending]
        self.model.change(self.open_model, [self.model, self.png.pending], pick_outputs, concurrency_id="model",
                          concurrency_limit=1)
        self.demo.load(self.open_model, self.model, pick_outputs, concurrency_id="model", concurrency_limit=1)
        self.steps.input(lambda: True, None, self.steps_typed)
        self.sampler.change(self.usual_steps, [self.model, self.sampler, self.steps_typed], self.steps)
        self.rescan.click(lambda: gr.update(choices=self.studio.checkpoints()), None, self.model)
        inputs = [self.model, self.sampler, self.grid, self.steps, self.n, self.seed, self.guidance, self.init,
                  self.strength, *self.slots]
        outputs = [self.gallery, self.seed_used, self.command, self.status, self.params]
        run = self.go.click(self.generate, inputs, outputs, concurrency_id="model", concurrency_limit=1,
                            show_progress_on=[self.gallery])
        self.stop.click(self.cancel, None, self.status, cancels=[run], queue=False)
        self.png.wire()
        self.xyz.wire(inputs, outputs)

    # -------------------------------------------------------------------------------------------- Runs tab

    def runs_tab(self) -> None:
        """The Runs tab's components: the table, a run's grid, the FID-vs-NFE plot, grids side by side."""
        gr.Markdown(f"Every run under `{self.studio.folders.runs_dir}` (its metrics.json), as `python compare.py` "
                    "tables them. Click a row for its final sample grid; pick two to four runs to see them side by "
                    "side.")
        with gr.Row():
            self.reload = gr.Button("Reload", elem_id="reload", size="sm")
            self.runs_status = gr.Textbox(show_label=False, interactive=False, elem_id="runs-status", scale=5)
        self.table = gr.Dataframe(headers=headers(), datatype=datatypes(), interactive=False, show_search="filter",
                                  elem_id="runs-table", wrap=True)
        with gr.Row():
            self.run_grid = gr.Image(label="Final sample grid of the selected run", interactive=False,
                                     elem_id="run-grid", format="png")
            self.plot = gr.Image(label="FID vs NFE", interactive=False, elem_id="fid-plot", format="png")
        self.pick = gr.Dropdown([], multiselect=True, max_choices=4, label="Runs side by side (two to four)",
                                elem_id="compare-runs")
        self.side = gr.Gallery(label="Final sample grids", columns=4, format="png", elem_id="side-by-side")

    def load_runs(self) -> list[Any]:
        """Table, FID-vs-NFE plot, the run menu and a status line from the runs folder."""
        try:
            with shown_errors():
                rows = read_runs(self.studio.folders)
                plot = fid_plot(rows, self.studio.out_dir)
        except Shown as err:
            return [gr.update(), gr.update(), gr.update(), str(err)]
        labels = [self.studio.folders.label(r["run_dir"]) for r in rows if r.get("run_dir")]
        return [table_values(rows, self.studio.folders), plot, gr.update(choices=labels, value=[]),
                f"{len(rows)} run{'' if len(rows) == 1 else 's'}."]

    def select_run(self, frame: Any, evt: gr.SelectData) -> list[Any]:
        """The final grid of the clicked row."""
        label = str(frame.iloc[evt.index[0]][headers()[-1]]) if evt.index is not None else ""
        try:
            with shown_errors():
                path = next((r["run_dir"] for r in read_runs(self.studio.folders)
                             if self.studio.folders.label(r["run_dir"]) == label), None)
                grid = run_grid(path, self.studio.folders) if path else None
        except Shown as err:
            return [None, str(err)]
        return [png(grid) if grid else None, f"{label}: " + ("final sample grid" if grid else "no sample grid")]

    def side_by_side(self, labels: list[str]) -> list[Any]:
        """The final grids of the picked runs, with captions."""
        try:
            with shown_errors():
                grids = grids_of(read_runs(self.studio.folders), list(labels or []), self.studio.folders)
        except Shown as err:
            return [None, str(err)]
        return [grids, f"{len(grids)} runs side by side." if labels else gr.update()]

    def wire_runs(self, demo: gr.Blocks) -> None:
        """The table loads with the page and on Reload; a clicked row shows its grid; picked runs their grids."""
        outputs = [self.table, self.plot, self.pick, self.runs_status]
        self.reload.click(self.load_runs, None, outputs)
        demo.load(self.load_runs, None, outputs)
        self.table.select(self.select_run, self.table, [self.run_grid, self.runs_status])
        self.pick.change(self.side_by_side, self.pick, [self.side, self.runs_status])

    # ----------------------------------------------------------------------------------------- Measure tab

    def measure_tab(self) -> None:
        """The Measure tab's components: checkpoint, image files, the values read."""
        gr.Markdown("The values a condition regressor reads from images, in raw units: pick a regressor checkpoint "
                    "(`python train.py model=regressor`, as `predict.py` reads), or a vector-conditioned model (then "
                    "the regressor of its `cond_mae` metric, trained once on the run's data and cached).")
        vectors = self.studio.checkpoints()
        self.m_model = gr.Dropdown(vectors, value=None, label="Checkpoint", allow_custom_value=True,
                                   elem_id="measure-model")
        self.m_files = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="measure-files")
        self.m_go = gr.Button("Measure", variant="primary", elem_id="measure")
        self.m_table = gr.Dataframe(interactive=False, elem_id="measure-table")
        self.m_status = gr.Textbox(show_label=False, interactive=False, elem_id="measure-status")

    def measure(self, model: str, files: list[Any] | None) -> list[Any]:
        """The values the regressor reads from the uploaded files, one row per image."""
        paths = [str(getattr(f, "name", f)) for f in files or []]
        try:
            with shown_errors():
                head, rows = self.studio.measure(model, paths)
        except Shown as err:
            return [None, str(err)]
        return [gr.update(value=rows, headers=head), f"{len(rows)} images measured."]

    def wire_measure(self) -> None:
        """Measure runs in the model's queue (one model job at a time)."""
        self.m_go.click(self.measure, [self.m_model, self.m_files], [self.m_table, self.m_status],
                        concurrency_id="model", concurrency_limit=1)


def build(studio: Studio) -> gr.Blocks:
    """The studio's page for a `Studio`."""
    with gr.Blocks(title="difflab studio", analytics_enabled=False) as demo:
        page = Page(studio, demo)
        gr.Markdown("## difflab studio")
        with gr.Tabs():
            with gr.Tab("Sample", id="sample"):
                page.sample_tab()
            with gr.Tab("Runs", id="runs"):
                page.runs_tab()
            with gr.Tab("Measure", id="measure"):
                page.measure_tab()
        page.wire_sample()
        page.wire_runs(demo)
        page.wire_measure()
    demo.queue(default_concurrency_limit=1)
    return demo


def _patient_url_ok(url: str, wait: float = 60.0) -> bool:
    """Gradio's start-up check that its own page answers, with patience: Gradio gives up after one 3 s timeout,
    which a busy machine exceeds while rendering the page the first time."""
    import httpx  # comes with gradio (the `studio` extra)

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if httpx.head(url, timeout=10).status_code < 400:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def launch(demo: gr.Blocks, host: str, port: int) -> str:
    """Start serving the page on host:port in the background (no share link, no analytics, no server-side
    rendering); returns its URL. `demo.block_thread()` then serves until Ctrl-C."""
    from gradio import networking  # an optional dependency (the `studio` extra)

    check, networking.url_ok = networking.url_ok, _patient_url_ok
    try:
        demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, ssr_mode=False,
                    quiet=True, show_error=False, css=CSS, inbrowser=False, footer_links=[])
    finally:
        networking.url_ok = check
    return f"http://{host}:{port}/"


__all__ = ["Page", "build", "error_text", "launch", "sampler_choices"]
