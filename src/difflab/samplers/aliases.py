"""Sampler and schedule names users know from the Stable Diffusion web UI: a registered sampler plus a grid.

Two tables: `WEBUI_NAMES` (the web UI's sampler names, some with their grid: "DPM++ 2M Karras") and
`WEBUI_SCHEDULES` (its "schedule type" names: "Karras", "Align Your Steps", ...). `resolve` reads a sampler name,
also a sampler name followed by a schedule name ("DPM++ 2M SGM Uniform"); `resolve_grid` reads `sampler.grid`.
Every name also has a spelling that a shell and Hydra take without quotes: lower case, '+' -> 'p', spaces -> '_'
("DPM++ 2M Karras" -> dpmpp_2m_karras). "Karras" is EDM eq. (5)'s grid, "Exponential" the log-SNR-uniform one
(`diffusion/sigma_grids.py` for the others); a name without a schedule keeps the scheduler's own grid.
"""

from __future__ import annotations

from difflab.errors import ConfigError
from difflab.samplers.base import SAMPLERS

# web UI name -> (difflab sampler, grid or None for the scheduler's own)
WEBUI_NAMES: dict[str, tuple[str, str | None]] = {
    "Euler a": ("euler_a", None),
    "Euler": ("euler", None),
    "LMS": ("lms", None),
    "LMS Karras": ("lms", "karras"),
    "Heun": ("heun", None),
    "DPM++ 2M": ("dpmpp_2m", None),
    "DPM++ 2M Karras": ("dpmpp_2m", "karras"),
    "DPM++ SDE": ("dpmpp_sde", None),
    "DPM++ SDE Karras": ("dpmpp_sde", "karras"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", None),
    "DPM++ 2M SDE Karras": ("dpmpp_2m_sde", "karras"),
    "DPM++ 2M SDE Exponential": ("dpmpp_2m_sde", "logsnr"),
    "DPM++ 3M SDE": ("dpmpp_3m_sde", None),
    "DPM++ 3M SDE Karras": ("dpmpp_3m_sde", "karras"),
    "DPM++ 3M SDE Exponential": ("dpmpp_3m_sde", "logsnr"),
    "DDIM": ("ddim", None),
    "DDPM": ("ddpm", None),
    "PLMS": ("plms", None),
    "UniPC": ("unipc", None),
    "DEIS": ("deis", None),
    "DPM adaptive": ("dpm_adaptive", None),
    "DPM fast": ("dpm_fast", None),
    "DPM2": ("dpm_2", None),
    "DPM2 Karras": ("dpm_2", "karras"),
    "DPM2 a": ("dpm_2_a", None),
    "DPM2 a Karras": ("dpm_2_a", "karras"),
    "DPM++ 2S a": ("dpmpp_2s_a", None),
    "DPM++ 2S a Karras": ("dpmpp_2s_a", "karras"),
    "DPM++ 2M SDE Heun": ("dpmpp_2m_sde_heun", None),
    "DPM++ 2M SDE Heun Karras": ("dpmpp_2m_sde_heun", "karras"),
    "DPM++ 2M SDE Heun Exponential": ("dpmpp_2m_sde_heun", "logsnr"),
    "Restart": ("restart", None),
    "LCM": ("lcm", None),
}

# web UI schedule type -> difflab grid ("Polyexponential" at the web UI's default rho = 1 is the exponential grid)
WEBUI_SCHEDULES: dict[str, str] = {
    "Karras": "karras",
    "Exponential": "logsnr",
    "Polyexponential": "logsnr",
    "Align Your Steps": "ays",
    "Align Your Steps SDXL": "ays_sdxl",
    "SGM Uniform": "sgm_uniform",
    "Simple": "simple",
    "Beta": "beta",
}


def plain(name: str) -> str:
    """The shell- and Hydra-safe spelling of a name: lower case, '+' -> 'p', spaces and '-' -> '_'."""
    return "_".join(name.strip().lower().replace("+", "p").replace("-", " ").split())


_BY_PLAIN = {plain(k): v for k, v in WEBUI_NAMES.items()}
_SCHEDULES_BY_PLAIN = {plain(k): v for k, v in WEBUI_SCHEDULES.items()}


def known_names() -> str:
    """The accepted names in one sentence: registered samplers, web UI names, and how to spell those plainly."""
    return (f"samplers: {', '.join(sorted(SAMPLERS))}; web UI names: {', '.join(WEBUI_NAMES)}, each also followed "
            f"by a schedule type ({', '.join(WEBUI_SCHEDULES)}: 'DPM++ 2M SGM Uniform') (or plainly, lower case "
            "with '+' -> 'p' and '_' for spaces: dpmpp_2m_karras)")


def _lookup(name: str) -> tuple[str, str | None] | None:
    """A registered sampler or a web UI sampler name (or its plain spelling), without a schedule suffix."""
    if name in SAMPLERS:
        return name, None
    return WEBUI_NAMES.get(name) or _BY_PLAIN.get(plain(name))


def resolve(name: str) -> tuple[str, str | None]:
    """(registered sampler, grid or None) for a sampler name or alias, or one followed by a web UI schedule type
    ("Euler a Align Your Steps"); ConfigError listing the known names."""
    name = str(name).strip().strip("'\"")
    hit = _lookup(name)
    if hit is not None:
        return hit
    spelled = plain(name)  # "<sampler> <schedule type>", also plainly: dpmpp_2m_sgm_uniform
    for schedule, grid in sorted(_SCHEDULES_BY_PLAIN.items(), key=lambda kv: -len(kv[0])):
        base = _lookup(spelled[: -len(schedule) - 1]) if spelled.endswith("_" + schedule) else None
        if base is not None and base[1] is None:
            return base[0], grid
    raise ConfigError.bad_value("sampler", f"unknown sampler {name!r}", f"Known {known_names()}.")


def resolve_grid(grid: str) -> str:
    """The difflab grid of `sampler.grid`: a web UI schedule type ("Align Your Steps", plainly align_your_steps,
    "Exponential") becomes its grid; any other value is kept (the scheduler checks it, `Scheduler.with_grid`)."""
    grid = str(grid).strip()
    return WEBUI_SCHEDULES.get(grid) or _SCHEDULES_BY_PLAIN.get(plain(grid)) or grid


_GRID_LABELS = {grid: name for name, grid in reversed(WEBUI_SCHEDULES.items())}  # logsnr -> "Exponential"
_SAMPLER_LABELS = {name: label for label, (name, grid) in reversed(WEBUI_NAMES.items()) if grid is None}


def webui_labels(name: str, grid: str | None) -> tuple[str, str]:
    """The web UI's "Sampler" and "Schedule type" of a registered sampler on a grid (the reverse of `resolve` and
    `resolve_grid`): ("dpmpp_2m", "karras") -> ("DPM++ 2M", "Karras"); a sampler or grid the web UI does not have
    keeps difflab's name, and no grid of its own is the web UI's "Automatic"."""
    return _SAMPLER_LABELS.get(name, name), "Automatic" if grid is None else _GRID_LABELS.get(grid, grid)
