"""The Sample tab's condition slots: a fixed pool of widgets per input kind, filled from what the model's condition
declares (`Condition.widgets`), read back into sample.py's keys (`slot_values`), and filled from a request
(`slot_fill`, a dropped PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from difflab.conditions import Input

MAX_COLUMNS = 32  # number inputs (a vector-conditioned model's columns); more columns: sample.py cond_csv=...
MAX_CHOICES = 2   # choice inputs (a class label)
MAX_TEXTS = 2     # text inputs (prompt, negative prompt)
POOLS = {"choice": MAX_CHOICES, "text": MAX_TEXTS, "number": MAX_COLUMNS}
OWN_GRID = "the sampler's own"  # the grid menu's entry for the sampler's (or scheduler's) own grid


def slot_update(inp: Input) -> Any:
    """A slot shown as the declared input: a menu of its choices, a text box, or a slider over its range."""
    if inp.kind == "choice":
        return gr.update(visible=True, label=inp.label, choices=[inp.unset, *map(str, inp.choices)], value=inp.unset)
    if inp.kind == "text":
        return gr.update(visible=True, label=inp.label, value=inp.value or "")
    return gr.update(visible=True, label=inp.label, minimum=inp.low, maximum=inp.high, value=inp.value, step=inp.step)


def slot_values(inputs: list[Input], values: list[Any]) -> dict[str, Any]:
    """The request's condition inputs from the slots' values (the slots in `Page.slots` order): a choice left at its
    `unset` entry gives nothing, an empty text gives nothing unless the input declares "" (a prompt), the number
    slots of a vector make one `{column: value}` mapping."""
    out: dict[str, Any] = {}
    start = {"choice": 0, "text": MAX_CHOICES, "number": MAX_CHOICES + MAX_TEXTS}
    seen = dict.fromkeys(POOLS, 0)
    for inp in inputs:
        if seen[inp.kind] >= POOLS[inp.kind]:
            continue
        value = values[start[inp.kind] + seen[inp.kind]]
        seen[inp.kind] += 1
        if inp.kind == "choice" and value not in (None, inp.unset):
            out[inp.key] = next(c for c in inp.choices if str(c) == str(value))
        elif inp.kind == "text" and (value or inp.value == ""):
            out[inp.key] = value or ""
        elif inp.kind == "number":
            out.setdefault(inp.key, {})[inp.column] = float(value)
    return out


def slot_fill(inputs: list[Input], given: Mapping[str, Any]) -> list[Any]:
    """Updates of every slot (in `Page.slots` order) that set the request's condition inputs `given` (sample.py keys:
    class_label, cond as {column: value}, prompt, negative_prompt); slots the request does not set are left as
    they are. The inverse of `slot_values`."""
    updates: list[Any] = [gr.update() for _ in range(MAX_CHOICES + MAX_TEXTS + MAX_COLUMNS)]
    start = {"choice": 0, "text": MAX_CHOICES, "number": MAX_CHOICES + MAX_TEXTS}
    seen = dict.fromkeys(POOLS, 0)
    for inp in inputs:
        if seen[inp.kind] >= POOLS[inp.kind]:
            continue
        slot = start[inp.kind] + seen[inp.kind]
        seen[inp.kind] += 1
        value = given.get(inp.key)
        if inp.kind == "number":
            value = value.get(inp.column) if isinstance(value, Mapping) else None
        if value is not None:
            updates[slot] = gr.update(value=str(value) if inp.kind == "choice" else value)
    return updates
