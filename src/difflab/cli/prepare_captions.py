"""Clean an image-caption set in the spirit of LAION-400M (Schuhmann et al. 2021, Sec. 2): keep a pair only when
the image decodes, is at least `--min-size` pixels on its shorter side, has a non-empty caption, and the cosine
similarity of its CLIP image and text embeddings is at least `--clip-min` (LAION used 0.28 with ViT-B/32).

    python -m difflab.cli.prepare_captions <caption folder | index.jsonl | index.csv> --out clean.jsonl \\
        --clip openai/clip-vit-base-patch32 --clip-min 0.28 --min-size 64

Writes the clean index (path, caption, clip_similarity; paths relative to the index's folder), ready for
`data=image_text data.root=clean.jsonl`, and `<out>.report.json`: every dropped pair with its reason, and counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from difflab.data.files import EXTENSIONS, describe_error, list_images, to_mode
from difflab.data.image_text import read_index
from difflab.errors import MissingFileError
from difflab.metrics.perceptual import CLIPFeatures, clip_model_loader

log = logging.getLogger(__name__)


def candidate_pairs(source: Path) -> tuple[Path, list[tuple[str, str | None]]]:
    """(image folder, [(image path, caption or None)]): every image of a folder (caption None without a .txt),
    or every row of an index."""
    if source.is_dir():
        rows = []
        for name in list_images(source, EXTENSIONS):
            txt = (source / name).with_suffix(".txt")
            rows.append((name, txt.read_text(encoding="utf-8").strip() if txt.is_file() else None))
        return source, rows
    if source.is_file():
        return source.parent, list(read_index(source))
    raise MissingFileError(f"Caption source not found: '{source}' is neither a caption folder (a.png + a.txt) nor a "
                           ".jsonl/.csv index. Pass one of those as the first argument.")


def check_image(path: Path, min_size: int) -> tuple[Image.Image | None, str | None]:
    """(RGB image, None) or (None, reason to drop it)."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_mode(img, 3)
    except Exception as e:  # PIL raises many types
        return None, f"unreadable: {describe_error(e)}"
    if min(rgb.size) < min_size:
        return None, f"too small: {rgb.size[0]}x{rgb.size[1]} < {min_size}"
    return rgb, None


@torch.no_grad()
def clip_similarity(model: Any, processor: Any, images: Sequence[Image.Image], captions: Sequence[str],
                    device: torch.device) -> torch.Tensor:
    """cos(CLIP image embedding, CLIP text embedding) per pair ([N], float32)."""
    features = CLIPFeatures(model)
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"].to(device)
    text = processor(text=list(captions), return_tensors="pt", padding=True, truncation=True, max_length=77)
    img = features.get_image_features(pixel_values=pixels).float()
    txt = features.get_text_features(input_ids=text["input_ids"].to(device),
                                     attention_mask=text["attention_mask"].to(device)).float()
    return torch.nn.functional.cosine_similarity(img, txt, dim=-1).cpu()


def prepare(source: Path, out: Path, clip: str, clip_min: float, min_size: int, batch_size: int = 32,
            device: str = "cpu") -> dict[str, Any]:
    """Filter the pairs of `source` into the index `out`; returns the report (also written next to `out`)."""
    root, rows = candidate_pairs(source)  # a missing or empty source is reported before CLIP is loaded
    model, processor = clip_model_loader(clip)()
    model = model.eval().to(device)
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, str]] = []
    batch: list[tuple[str, str, Image.Image]] = []

    def flush() -> None:
        sims = clip_similarity(model, processor, [b[2] for b in batch], [b[1] for b in batch], torch.device(device))
        for (path, caption, _), sim in zip(batch, sims.tolist()):
            if sim >= clip_min:
                kept.append({"path": path, "caption": caption, "clip_similarity": round(sim, 4)})
            else:
                dropped.append({"path": path, "reason": f"clip similarity {sim:.3f} < {clip_min}"})
        batch.clear()

    for path, caption in rows:
        if not caption:
            dropped.append({"path": path, "reason": "no caption" if caption is None else "empty caption"})
            continue
        image, reason = check_image(root / path, min_size)
        if reason is not None:
            dropped.append({"path": path, "reason": reason})
            continue
        batch.append((path, caption, image))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row in kept:
            rel = os.path.relpath((root / row["path"]).resolve(), out.parent.resolve())
            f.write(json.dumps({**row, "path": Path(rel).as_posix()}) + "\n")
    reasons = Counter("clip similarity" if d["reason"].startswith("clip") else d["reason"].split(":")[0] for d in dropped)
    report = {"source": str(source), "index": str(out), "clip": clip, "clip_min": clip_min, "min_size": min_size,
              "candidates": len(rows), "kept": len(kept), "dropped": len(dropped), "reasons": dict(reasons),
              "dropped_pairs": dropped}
    Path(f"{out}.report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m difflab.cli.prepare_captions", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a caption folder (a.png + a.txt) or a .jsonl/.csv index")
    parser.add_argument("--out", type=Path, required=True, help="the clean .jsonl index to write")
    parser.add_argument("--clip", default="openai/clip-vit-base-patch32", help="CLIP model: Hub name (cache) or folder")
    parser.add_argument("--clip-min", type=float, default=0.28, help="minimum CLIP image-text cosine similarity")
    parser.add_argument("--min-size", type=int, default=64, help="minimum shorter side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    report = prepare(args.source, args.out, args.clip, args.clip_min, args.min_size, args.batch_size, args.device)
    print(f"kept {report['kept']} of {report['candidates']} pairs -> {args.out}; dropped: {report['reasons']} "
          f"(details in {args.out}.report.json)")
    return report


if __name__ == "__main__":
    from difflab.utils.entry import run_script

    run_script(main)
