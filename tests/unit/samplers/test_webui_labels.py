"""The web UI's "Sampler" and "Schedule type" of every sampler and grid, and back (what a PNG's parameters say)."""

from __future__ import annotations

from difflab.samplers.aliases import (
    WEBUI_NAMES,
    WEBUI_SCHEDULES,
    resolve,
    resolve_grid,
    webui_labels,
)
from difflab.samplers.base import SAMPLERS


def test_every_label_reads_back_as_its_sampler_and_grid() -> None:
    for name in SAMPLERS:
        for grid in [None, *set(WEBUI_SCHEDULES.values()), "trailing"]:
            sampler, schedule = webui_labels(name, grid)
            assert resolve(sampler) == (name, None), (name, sampler)
            assert (None if schedule == "Automatic" else resolve_grid(schedule)) == grid, (grid, schedule)


def test_the_web_uis_own_names_are_used() -> None:
    assert webui_labels("dpmpp_2m", "karras") == ("DPM++ 2M", "Karras")
    assert webui_labels("euler_a", None) == ("Euler a", "Automatic")
    assert webui_labels("dpmpp_2m_sde", "logsnr") == ("DPM++ 2M SDE", "Exponential")
    assert webui_labels("ode", "trailing") == ("ode", "trailing")  # no web UI name: difflab's
    assert all(webui_labels(*WEBUI_NAMES[label])[0] == label for label in ("Euler", "DDIM", "UniPC", "Restart"))
