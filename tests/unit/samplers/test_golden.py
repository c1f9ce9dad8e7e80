"""Golden values at a fixed seed for every registered sampler: a regression guard.

Regenerate (after an intended change, with the reason in the commit) with
    python tests/unit/samplers/test_golden.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from difflab.diffusion import DiscreteVPScheduler
from difflab.diffusion.toy import three_gaussians
from difflab.samplers import SAMPLERS, SamplerSpec, generate

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "samplers.json"
KNOBS = {"pc": {"snr": 0.16}, "ode": {"rtol": 1e-4, "atol": 1e-4}, "heun": {"s_churn": 5.0}}


def sample(name: str) -> list[list[float]]:
    spec = SamplerSpec(name, steps=8, **KNOBS.get(name, {}))
    x, _ = generate(three_gaussians().denoiser, DiscreteVPScheduler(grid="karras"), spec, n=4, shape=(2,), seed=123)
    return x.tolist()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_matches_its_golden_value(name):
    golden = json.loads(GOLDEN.read_text())
    assert name in golden, f"no golden value for sampler {name!r}: run `python tests/unit/samplers/test_golden.py --write`"
    torch.testing.assert_close(torch.tensor(sample(name)), torch.tensor(golden[name]), atol=1e-4, rtol=1e-4)


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_text(json.dumps({name: sample(name) for name in sorted(SAMPLERS)}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
