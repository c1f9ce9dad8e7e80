"""Two panels of the Sample tab: reading a dropped PNG's settings into its fields, and the X/Y/Z plot.

A dropped PNG's `parameters` chunk (difflab's request, or the Stable Diffusion web UI's settings) fills the model,
sampler, grid, steps, images, seed, guidance, condition and img2img fields (`Studio.read_png`); when it names
another model, the fields are filled once that model is loaded (`Page.open_model` takes them as `pending`). The
X/Y/Z plot draws the Sample tab's request over up to three keys, as `sample.py xyz=...` does
(`Studio.xyz`, `difflab.api.xyz`), into the tab's gallery.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from difflab.errors import ConfigError
from difflab.studio.events import Shown, shown_errors
from difflab.studio.forms import PngFields
from difflab.studio.service import ModelInfo
from difflab.studio.slots import OWN_GRID, slot_fill

AXIS_KEYS = ["sampler", "sampler.steps", "sampler.grid", "guidance_scale", "seed", "strength", "prompt",
             "negative_prompt", "class_label", "sampler.eta", "guidance_rescale", "scheduler.grid"]


def merged(base: Any, change: Any) -> Any:
    """Two gr.update dicts as one (the second's values win)."""
    return {**base, **change} if isinstance(base, dict) and isinstance(change, dict) else change


class PngPanel:
    """"Read settings from a PNG": a file drop whose settings fill the Sample tab."""

    def __init__(self, page: Any) -> None:
        self.page = page
        with gr.Accordion("Read settings from a PNG (difflab's or the web UI's)", open=False):
            self.file = gr.File(label="Drop a PNG", file_types=[".png"], type="filepath", elem_id="png-info")
        self.pending = gr.State(None)  # a PNG's fields waiting for their model to load

    @property
    def targets(self) -> list[Any]:
        """The fields a PNG fills, in `fill`'s order."""
        p = self.page
        return [p.sampler, p.steps, p.grid, p.guidance, *p.slots, p.n, p.seed, p.init, p.strength]

    def fill(self, info: ModelInfo, fields: PngFields) -> list[Any]:
        """Updates of `targets` that show the PNG's request on the model `info`."""
        p = self.page
        conditions = p.condition_updates(info)  # [guidance, *slots]: the model's widgets, then the PNG's values
        guidance = gr.update(value=fields.guidance_scale) if info.guided and fields.guidance_scale is not None \
            else gr.update()
        values = [guidance, *slot_fill(info.inputs, fields.inputs)]
        keep = gr.update()
        return [gr.update(value=fields.sampler) if fields.sampler else keep,
                gr.update(value=fields.steps) if fields.steps else keep,
                gr.update(choices=[OWN_GRID, *info.grids], value=fields.grid if fields.grid in info.grids else OWN_GRID),
                *[merged(c, v) for c, v in zip(conditions, values)],
                gr.update(value=min(fields.n, p.studio.max_images)),
                gr.update(value=fields.seed) if fields.seed is not None else keep,
                gr.update(value=fields.init_image) if fields.init_image else keep,
                gr.update(value=fields.strength) if fields.strength is not None else keep]

    @staticmethod
    def status(path: str, fields: PngFields) -> str:
        """The status line after reading a PNG: what it filled, and what the tab has no field for."""
        text = f"Settings read from {Path(path).name}."
        if fields.left_out:
            text += f" The Sample tab has no field for: {', '.join(fields.left_out)} (sample.py from_png= uses them)."
        return text

    def read(self, path: str | None, model: str | None) -> list[Any]:
        """[model, *targets, steps_typed, pending, status] after dropping the PNG at `path`."""
        p, skip = self.page, [gr.update()] * (len(self.targets) + 3)
        if not path:
            return [gr.update(), *skip]
        try:
            with shown_errors():
                fields = p.studio.read_png(path)
                target = fields.model or model
                if not target:
                    raise ConfigError("The PNG names no checkpoint this studio serves: pick the model first.")
                info = p.studio.open(target)
        except Shown as err:
            return [gr.update(), *skip[:-1], str(err)]
        if model and info.path == str(p.studio.folders.check(model, "checkpoint")):
            return [gr.update(), *self.fill(info, fields), True, None, self.status(path, fields)]
        return [info.path, *skip[:-3], True, fields, self.status(path, fields)]  # filled once the model is loaded

    def wire(self) -> None:
        """Dropping a PNG fills the fields (and picks its model)."""
        p = self.page
        self.file.upload(self.read, [self.file, p.model], [p.model, *self.targets, p.steps_typed, self.pending,
                                                          p.status], concurrency_id="model", concurrency_limit=1)


class XYZPanel:
    """The X/Y/Z plot: up to three keys, each with its values, over the Sample tab's request."""

    def __init__(self, page: Any) -> None:
        self.page = page
        with gr.Accordion("X/Y/Z plot: the request over up to three keys", open=False):
            self.keys, self.values = [], []
            for axis in ("X", "Y", "Z"):
                with gr.Row():
                    self.keys.append(gr.Dropdown(AXIS_KEYS, value=None, label=f"{axis} key", allow_custom_value=True,
                                                 elem_id=f"xyz-{axis.lower()}-key", scale=1))
                    self.values.append(gr.Textbox(label=f"{axis} values (a, b, c)", elem_id=f"xyz-{axis.lower()}-values",
                                                  scale=2))
            self.go = gr.Button("Draw the X/Y/Z grid", elem_id="xyz-generate")

    def draw(self, request: gr.Request, *inputs: Any,
             progress: gr.Progress = gr.Progress()) -> list[Any]:  # noqa: B008  (Gradio reads the default)
        """Gallery (the labelled grids), seed, command, status and the cells' record of one X/Y/Z plot."""
        p = self.page
        axes = list(zip(inputs[:3], inputs[3:6]))
        result = p.job(request, progress, "images of a cell", lambda report, stop: p.studio.xyz(
            p.form(*inputs[6:15], list(inputs[15:])), axes, report, stop))
        if isinstance(result, list):
            return result
        captions = [(img, name) for img, name in zip(result.images, result.record["grids"])]
        done = f"{len(result.record['cells'])} cells, {len(result.images)} grid(s), in {result.out_dir}"
        return [captions, str(result.seed), result.command, done, json.dumps(result.record, indent=2, default=str)]

    def wire(self, sample_inputs: list[Any], outputs: list[Any]) -> None:
        """The button draws the grid with the Sample tab's inputs (one model job at a time, Stop cancels it)."""
        self.go.click(self.draw, [*self.keys, *self.values, *sample_inputs], outputs, concurrency_id="model",
                      concurrency_limit=1, show_progress_on=[self.page.gallery])
