"""The variant comparison table: metrics.json records (local runs or a W&B project) -> rows, Markdown, CSV.

A record is what `difflab.evaluation.score.metrics_record` writes; a row is one line of the table,
with the columns of `columns()` (its metric columns from `difflab.metrics.registry`) and None where a value was not
computed. Autoencoder records (kind "autoencoder",
the stage 1 of an LDM or `model=vae`) fill rFID and PSNR instead of the sample metrics. A row whose record has a
`sample_strip` carries the strip's path as `samples` (the comparison gallery and the W&B Table's image column).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from difflab.errors import MissingFileError
from difflab.metrics.registry import load_all
from difflab.utils.files import write_text

log = logging.getLogger(__name__)

Record = dict[str, Any]
Row = dict[str, Any]

LEADING = ("variant", "scheduler", "sampler", "steps")
TRAILING = ("params", "train_images_seen", "data", "n_samples", "kind", "run_dir")
HEADERS = {"train_images_seen": "images seen", "n_samples": "samples", "run_dir": "run"}  # beside the metrics' labels


def value_columns() -> tuple[str, ...]:
    """The metric columns, in the order of the registry (`difflab.metrics.registry`)."""
    return tuple(load_all())


def columns() -> tuple[str, ...]:
    """Every column of a row, in order: what ran, the metrics, what it cost and where it is."""
    return (*LEADING, *value_columns(), *TRAILING)


def header(column: str) -> str:
    """A column's header: a metric's label ("FID ↓"), else its own short name."""
    metric = load_all().get(column)
    return metric.label if metric is not None else HEADERS.get(column, column)


MISSING = "–"
NOT_COMPUTED = "n/c"  # a metric the run could not compute (the reason is in its protocol's `unavailable`)
WANDB_PREFIXES = ("eval/", "val/", "perf/")
OFFLINE_MODES = ("offline", "disabled", "dryrun")


def _num(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric, NaN and inf values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | float | None:
    """An int when the number is whole (NFE 50.0 -> 50), else the float."""
    x = _num(value)
    return int(x) if x is not None and x.is_integer() else x


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# ----------------------------------------------------------------------------------------- records


# fields that table_row reads, and the JSON types it can read them as (each may also be absent or null)
FIELD_TYPES: dict[str, tuple[type, ...]] = {"protocol": (dict,), "sampler": (dict, str), "data": (dict, str)}


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def check_record(obj: Any) -> str | None:
    """Why `obj` is not a metrics.json record that the table can read, or None when it is one."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if not isinstance(obj.get("values"), dict):
        return "no `values` object"
    if not isinstance(obj.get("kind"), str):
        return "no `kind` string"
    for field, types in FIELD_TYPES.items():
        value = obj.get(field)
        if value is not None and not isinstance(value, types):
            wanted = " or ".join("an object" if t is dict else "a string" for t in types)
            return f"`{field}` is {_shown(value)}, not {wanted}"
    name = obj["sampler"].get("name") if isinstance(obj.get("sampler"), dict) else None
    if name is not None and not isinstance(name, str):
        return f"`sampler.name` is {_shown(name)}, not a string"
    unavailable = (obj.get("protocol") or {}).get("unavailable")
    if unavailable is not None and not isinstance(unavailable, dict):
        return f"`protocol.unavailable` is {_shown(unavailable)}, not an object"
    return None


def collect_local(runs_dir: str | Path) -> list[Record]:
    """Every valid `metrics.json` under `runs_dir`, sorted by path; bad files are skipped with a warning.

    `run_dir` is set to the folder that holds the file, so runs copied from another machine point here.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise MissingFileError.for_path(root, "runs_dir", "Pass runs_dir=<the folder that holds your runs> (train.py "
                                        "and evaluate.py write them under <root>/runs).", "Runs folder")
    records = []
    for path in sorted(root.rglob("metrics.json"), key=lambda p: p.as_posix()):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            log.warning("skipping %s: cannot read it as JSON (%s)", path, err)
            continue
        problem = check_record(record)
        if problem is not None:
            log.warning("skipping %s: not a metrics.json record (%s)", path, problem)
            continue
        record["run_dir"] = str(path.parent.resolve())
        records.append(record)
    return records


def _wandb_credentials() -> bool:
    """True when an API key is configured: $WANDB_API_KEY, or a W&B host in the netrc file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    base = os.environ.get("WANDB_BASE_URL", "").split("://")[-1].split("/")[0]
    try:
        text = netrc.read_text()
    except OSError:
        return False
    return any(host and host in text for host in ("wandb", "coreweave", base))


def _require_wandb_api(where: str) -> None:
    """Raise a RuntimeError before any network call when the W&B API cannot be used."""
    hint = "or compare local runs instead (wandb_project=null runs_dir=<folder>)"
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in OFFLINE_MODES:
        raise RuntimeError(f"cannot read W&B project {where!r}: WANDB_MODE={mode}, and reading runs needs the "
                           f"online W&B API. Unset WANDB_MODE (or run `wandb online`) with an API key, {hint}")
    if not _wandb_credentials():
        raise RuntimeError(f"cannot read W&B project {where!r}: no W&B API key configured. Set WANDB_API_KEY or "
                           f"run `wandb login`, {hint}")


def record_from_wandb(config: Mapping[str, Any], summary: Mapping[str, Any], *, path: str | None = None,
                      url: str | None = None) -> Record | None:
    """A W&B run's config and summary as a record; None for runs without metric values (e.g. compare runs).

    evaluate.py logs the record itself (less `values`) as its config and `eval/*` metrics; train.py logs
    the resolved config with the Hydra `choices` and `val/*`, `perf/*` metrics.
    """
    values = {}
    for key, value in summary.items():
        if key.startswith(WANDB_PREFIXES) and _num(value) is not None:
            values.setdefault(key.split("/", 1)[1], float(value))
    if not values:
        return None
    if isinstance(config.get("kind"), str):
        record = {k: v for k, v in config.items() if k != "values"}
    else:
        choices = config.get("choices") or {}
        sampler = dict(config.get("sampler") or {})
        name = sampler.pop("name", None) or choices.get("sampler")
        steps = sampler.pop("steps", None)
        knobs = {k: v for k, v in sampler.items() if k not in ("_target_", "clip_denoised")}
        data = config.get("data") or {}
        metrics = config.get("metrics") or {}
        record = {
            "kind": "train", "run_dir": (config.get("paths") or {}).get("run_dir"), "ckpt": None,
            "variant": choices.get("model"), "scheduler": choices.get("scheduler"),
            "sampler": {"name": name, "steps": steps, **knobs} if name else None,
            "data": {"name": choices.get("data") or data.get("name"), "resolution": data.get("resolution")},
            "params": None, "train_images_seen": None,
            "global_step": _count(summary.get("trainer/global_step")),
            "n_samples": metrics.get("n_samples"), "seed": metrics.get("seed"), "protocol": {},
        }
    record["values"] = values
    record["run_dir"] = record.get("run_dir") or path
    record["wandb"] = {"path": path, "url": url}
    return record


def collect_wandb(project: str, entity: str | None = None, timeout: int = 30) -> list[Record]:
    """Records from the runs of a W&B project (needs network access and an API key), sorted by run path."""
    where = f"{entity}/{project}" if entity else project
    _require_wandb_api(where)
    import wandb  # heavy to import; only runs that log to W&B need it

    records = []
    try:
        for run in wandb.Api(timeout=timeout).runs(where):
            run_path = "/".join(run.path)
            record = record_from_wandb(dict(run.config), dict(run.summary_metrics), path=run_path, url=run.url)
            problem = check_record(record) if record is not None else None
            if problem is not None:
                log.warning("skipping W&B run %s: its config is not a metrics record (%s)", run_path, problem)
            elif record is not None:
                records.append(record)
    except Exception as err:  # the API raises many types (CommError, HTTPError, ValueError, ...)
        raise RuntimeError(f"cannot read W&B project {where!r}: {err}") from err
    return sorted(records, key=lambda r: r["wandb"]["path"] or "")


# --------------------------------------------------------------------------------------------- rows


def _sampler_spec(record: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = record.get("sampler")
    if isinstance(spec, str):
        return {"name": spec}
    return dict(spec) if isinstance(spec, dict) and spec.get("name") else None


def _knob(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sampler_labels(records: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """Sampler name plus the knobs that differ between records of that sampler: `ddim eta=0`, `ddim eta=1`."""
    specs = [_sampler_spec(r) for r in records]
    keys: dict[str, set[str]] = {}
    for spec in filter(None, specs):
        keys.setdefault(spec["name"], set()).update(set(spec) - {"name", "steps"})
    seen: dict[tuple[str, str], set[str]] = {}
    for spec in filter(None, specs):
        for key in keys[spec["name"]]:
            seen.setdefault((spec["name"], key), set()).add(repr(spec.get(key, "<unset>")))
    labels: list[str | None] = []
    for spec in specs:
        if spec is None:
            labels.append(None)
            continue
        varying = sorted(k for k in keys[spec["name"]] if len(seen[spec["name"], k]) > 1 and k in spec)
        labels.append(" ".join([str(spec["name"]), *(f"{k}={_knob(spec[k])}" for k in varying)]))
    return labels


def _data_label(data: Any) -> str | None:
    if isinstance(data, dict):
        name, res = data.get("name"), data.get("resolution")
        return None if name is None else f"{name} {res}px" if res else str(name)
    return _text(data)


def table_row(record: Mapping[str, Any], sampler: str | None) -> Row:
    """One table row (every column of `columns()`, in order) from a record and its sampler label."""
    values = record.get("values") or {}
    spec = _sampler_spec(record) or {}
    row: Row = {"variant": _text(record.get("variant")), "scheduler": _text(record.get("scheduler")),
                "sampler": sampler, "steps": _count(spec.get("steps"))}
    row.update({k: _num(values.get(k)) for k in value_columns()})
    row["nfe"] = _count(values.get("nfe"))
    row.update({
        "params": _count(record.get("params")), "train_images_seen": _count(record.get("train_images_seen")),
        "data": _data_label(record.get("data")), "n_samples": _count(record.get("n_samples")),
        "kind": _text(record.get("kind")), "run_dir": _text(record.get("run_dir")),
    })
    strip = record.get("sample_strip")
    if isinstance(strip, str) and record.get("run_dir"):
        row["samples"] = str(Path(record["run_dir"]) / strip)
    unavailable = (record.get("protocol") or {}).get("unavailable") or {}
    if unavailable:  # e.g. {"is": "the Inception weights ... have no classifier head ..."}
        row["unavailable"] = {k: str(v) for k, v in unavailable.items() if k in value_columns()}
    return row


def _sort_key(row: Row) -> tuple:
    text = tuple(row[k] or "" for k in ("data", "variant", "scheduler", "sampler"))
    nfe = row["nfe"] if row["nfe"] is not None else math.inf
    steps = row["steps"] if row["steps"] is not None else math.inf
    return (*text, nfe, steps, row["kind"] or "", row["run_dir"] or "")


def build_table(records: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Rows with the columns of `columns()`, sorted by (data, variant, scheduler, sampler, nfe); missing values None."""
    records = list(records)
    rows = [table_row(r, label) for r, label in zip(records, sampler_labels(records))]
    return sorted(rows, key=_sort_key)


# ------------------------------------------------------------------------------------------ formats


def _si(x: float) -> str:
    """Three significant digits with a k/M/B suffix: 1190000 -> 1.19M, 128000 -> 128k."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale * 0.9995:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


FORMATS = {"params": _si, "train_images_seen": _si}  # beside the metrics' own formats


def format_cell(column: str, value: Any, unavailable: Mapping[str, str] | None = None) -> str:
    """A value as shown in the Markdown table; NOT_COMPUTED ('n/c') for a metric the run could not compute,
    MISSING ('–') for other None values."""
    if value is None and column in (unavailable or {}):
        return NOT_COMPUTED
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    metric = load_all().get(column)
    fmt = metric.fmt if metric is not None else FORMATS.get(column, str)
    text = fmt(value)
    return text.replace("|", "\\|")


def to_markdown(rows: Sequence[Row], root: str | Path | None = None) -> str:
    """A Markdown table of the rows; run folders are shown relative to `root` when under it."""
    cols = columns()
    numeric = set(value_columns()) | {"steps", "params", "train_images_seen", "n_samples"}
    lines = ["| " + " | ".join(header(c) for c in cols) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in cols) + "|"]
    base = Path(root).resolve() if root is not None else None
    for row in rows:
        shown = dict(row)
        if base is not None and row.get("run_dir"):
            run_dir = Path(row["run_dir"])
            shown["run_dir"] = run_dir.relative_to(base).as_posix() if run_dir.is_relative_to(base) else row["run_dir"]
        lines.append("| " + " | ".join(format_cell(c, shown.get(c), row.get("unavailable")) for c in cols) + " |")
    reasons = sorted({f"{header(k)}: {why}" for row in rows for k, why in (row.get("unavailable") or {}).items()})
    notes = [f"\n{NOT_COMPUTED} = not computed. {why}" for why in reasons]
    return "\n".join(lines) + "\n" + "".join(f"{n}\n" for n in notes)


def to_csv(rows: Sequence[Row], path: str | Path, key: str | None = None) -> Path:
    """The rows as CSV with raw numbers (full precision) and empty cells for missing values (through the one output
    writer, `difflab.utils.files`; an existing file is replaced)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns()), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns()})
    return write_text(path, text.getvalue(), key=key, overwrite=True)
