"""The model card (README.md) of an exported pipeline: how to load it, the model, its data, metrics and samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from difflab.utils.files import write_text

CONFIG_SECTIONS = ("model", "scheduler", "data", "trainer", "seed", "choices")


def run_metrics(ckpt: Path) -> dict[str, Any] | None:
    """The `metrics.json` record of the run that wrote `ckpt` (<run>/checkpoints/<name>.ckpt), or None."""
    path = ckpt.resolve().parent.parent / "metrics.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("values"), dict) else None


def _metrics_table(record: dict[str, Any] | None) -> list[str]:
    """The run's metric values as a Markdown table, with the protocol line; a sentence when there are none."""
    if record is None:
        return ["The run folder holds no metrics.json (train with metrics enabled, or run evaluate.py)."]
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {v:.6g} |" for k, v in sorted(record["values"].items()) if isinstance(v, (int, float))]
    protocol = record.get("protocol") or {}
    shown = {k: protocol[k] for k in list(protocol)[:8]}
    return rows + ["", f"Measured on {record.get('n_samples', '?')} samples; protocol: `{json.dumps(shown)}`."]


def _usage(pipeline: str, conditional: bool) -> list[str]:
    """How to load the folder with diffusers, and with difflab."""
    lines = ["```python", f"from diffusers import {pipeline}, UNet2DModel", "",
             f'pipe = {pipeline}.from_pretrained("<this folder>")']
    if conditional:
        lines += ['unet = UNet2DModel.from_pretrained("<this folder>", subfolder="unet")',
                  "# class-conditional: unet(x_t, t, class_labels=labels); the last class embedding is the null class",
                  "# of classifier-free guidance. The diffusers pipeline has no class input: sample with difflab."]
    else:
        lines += ["images = pipe(batch_size=4, num_inference_steps=50).images"]
    return lines + ["```", "", "In difflab: `python sample.py model=diffusers pipeline.path=<this folder> sampler=dpmpp_2m`."]


def write_card(out: Path, *, run_config: dict[str, Any], meta: dict[str, Any], pipeline: str, ckpt: Path,
               grid: Path | None, unet_params: int) -> Path:
    """Write <out>/README.md (Hugging Face front matter, usage, model, data, metrics, sample grid, config)."""
    data = {"name": (run_config.get("choices") or {}).get("data", "unknown"), **(run_config.get("data") or {})}
    conditional = meta["condition"]["kind"] != "none"
    front = {"library_name": "diffusers", "tags": ["difflab", "diffusers", pipeline],
             "pipeline_tag": "unconditional-image-generation"}
    config = {k: run_config[k] for k in CONFIG_SECTIONS if k in run_config}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {data['name']} diffusion model ({pipeline})", "",
             f"Exported by difflab from `{ckpt}` (step {meta['global_step']}, {meta['train_images_seen']} training "
             f"images seen, {'EMA' if meta.get('use_ema') else 'raw'} weights).", "", "## Use", "",
             *_usage(pipeline, conditional), "", "## Model", "",
             f"- UNet2DModel, {unet_params:,} parameters; images {tuple(meta['image_shape'])}",
             f"- condition: {meta['condition']}; guidance scale {meta['guidance_scale']}",
             f"- difflab sampler at export: `{json.dumps(meta['sampler'])}`", "", "## Data", "",
             f"- {data['name']}, resolution {data.get('resolution', '?')}, "
             f"{data.get('channels', '?')} channels", "", "## Metrics", "", *_metrics_table(run_metrics(ckpt)), ""]
    if grid is not None:
        lines += ["## Samples", "", f"![samples]({grid.name})", "", f"{meta['card']['n']} images, seed "
                  f"{meta['card']['seed']}, sampler `{json.dumps(meta['card']['sampler'])}`.", ""]
    lines += ["## Training config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    path = out / "README.md"
    write_text(path, "\n".join(lines), overwrite=True)
    return path
