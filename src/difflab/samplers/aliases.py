"""Sampler names users know from the Stable Diffusion web UI, each a registered sampler plus a grid.

One table; `resolve` reads it. Every name also has a spelling that a shell and Hydra take without quotes:
lower case, '+' -> 'p', spaces -> '_' ("DPM++ 2M Karras" -> dpmpp_2m_karras). "Karras" is EDM eq. (5)'s grid,
"Exponential" the log-SNR-uniform one; a name without either keeps the scheduler's own grid.
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
    "LCM": ("lcm", None),
}


def plain(name: str) -> str:
    """The shell- and Hydra-safe spelling of a name: lower case, '+' -> 'p', spaces and '-' -> '_'."""
    return "_".join(name.strip().lower().replace("+", "p").replace("-", " ").split())


_BY_PLAIN = {plain(k): v for k, v in WEBUI_NAMES.items()}


def known_names() -> str:
    """The accepted names in one sentence: registered samplers, web UI names, and how to spell those plainly."""
    return (f"samplers: {', '.join(sorted(SAMPLERS))}; web UI names: {', '.join(WEBUI_NAMES)} (or plainly, "
            "lower case with '+' -> 'p' and '_' for spaces: dpmpp_2m_karras)")


def resolve(name: str) -> tuple[str, str | None]:
    """(registered sampler, grid or None) for a sampler name or alias; ConfigError listing the known names."""
    name = str(name).strip().strip("'\"")
    if name in SAMPLERS:
        return name, None
    hit = WEBUI_NAMES.get(name) or _BY_PLAIN.get(plain(name))
    if hit is None:
        raise ConfigError.bad_value("sampler", f"unknown sampler {name!r}",
                                    f"Known {known_names()}.")
    return hit
