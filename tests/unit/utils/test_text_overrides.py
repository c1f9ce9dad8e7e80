"""Prompts on the command line: values Hydra's grammar refuses (or reads as lists) reach the config as the text typed."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from difflab.api.config import group_aliases
from difflab.utils.config import as_text_override, conf_dir

PROMPTS = [
    "(worst quality:1.4)", "masterpiece, best quality, (a cat:1.2)", "a [dog:cat:0.5] in a [park|garden] BREAK x",
    "it's a \\(literal\\) bracket", "ends in a backslash\\", "a\\'b", "x = y", "[a:b:c]", "{braces} and $dollars",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_text_overrides_parse_back_to_the_text(prompt) -> None:
    for key in ("prompt", "negative_prompt"):
        (arg,) = group_aliases([f"{key}={prompt}"], conf_dir())
        assert OverridesParser.create().parse_override(arg).value() == prompt, arg


def test_what_hydra_reads_as_meant_stays() -> None:
    for value in ("a cat", "null", "${oc.env:HOME}", "'(a:1.2)'", '"b, c"', "1girl", ""):
        assert as_text_override("prompt", value) == f"prompt={value}"
    assert group_aliases(["sample.py", "-m", "prompt=a cat,a dog"], conf_dir())[-1] == "prompt=a cat,a dog"  # a sweep
    assert group_aliases(["sample.py", "prompt=a cat,a dog"], conf_dir())[-1] == "prompt='a cat,a dog'"
    assert group_aliases(["x", "sampler=Euler a", "prompt=(a:1.2)"], conf_dir()) == [
        "x", "sampler=euler_a", "prompt='(a:1.2)'"]  # the other rewrites still apply
