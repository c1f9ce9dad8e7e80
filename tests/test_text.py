"""Prompt weighting: the parser (nested, escaped, de-emphasis) and its effect on a CLIP text encoder's context."""

from __future__ import annotations

import pytest
import torch

from difflab.nets.prompts import parse_prompt_weights
from fakes import HAS_CLIP_TOKENIZER, tiny_clip_text

needs_tokenizer = pytest.mark.skipif(not HAS_CLIP_TOKENIZER, reason="needs the CLIP tokenizer in ../shared/assets/clip_tokenizer")


@pytest.mark.parametrize("prompt,expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (red:1.5) [dog]", [("a ", 1.0), ("red", 1.5), (" ", 1.0), ("dog", 1 / 1.1)]),
    ("(worst quality:1.4), ((a (b) c))", [("worst quality", 1.4), (", ", 1.0), ("a ", 1.21), ("b", 1.331), (" c", 1.21)]),
    ("((x:2) y:0.5)", [("x", 1.0), (" y", 0.5)]),  # nested weights multiply: 2 * 0.5
    (r"\(not weighted\) \[nor this\] \\", [("(not weighted) [nor this] \\", 1.0)]),
    (r"(a \(b\):1.2)", [("a (b)", 1.2)]),
    ("(open to the end", [("open to the end", 1.1)]),
    ("closed ) ] twice", [("closed ) ] twice", 1.0)]),
    ("ratio a:b [x:1.5]", [("ratio a:b ", 1.0), ("x:1.5", 1 / 1.1)]),  # ":w" only closes round brackets
    ("", [("", 1.0)]),
])
def test_prompt_weight_parsing(prompt, expected) -> None:
    got = parse_prompt_weights(prompt)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@needs_tokenizer
def test_weighting_scales_token_states_and_restores_the_mean() -> None:
    from difflab.nets.text import CLIPTextEncoder

    tokenizer, model = tiny_clip_text()
    encoder = CLIPTextEncoder(tokenizer, model)
    plain = "a photo of a cat, high quality"
    ids, weights = encoder.tokenize(plain)
    assert ids == tokenizer(plain, padding="max_length", max_length=77, truncation=True).input_ids  # SD's tokenization
    assert weights == [1.0] * 77
    z_plain = encoder([plain])
    torch.testing.assert_close(z_plain, model(torch.tensor([ids])).last_hidden_state)  # unweighted: the CLIP states
    weighted = "a photo of a (cat:1.5), [high quality]"
    ids_w, weights_w = encoder.tokenize(weighted)
    assert ids_w == ids  # brackets and weights are not tokens
    n_cat = len(tokenizer("cat", add_special_tokens=False).input_ids)
    assert weights_w.count(1.5) == n_cat and weights_w.count(pytest.approx(1 / 1.1)) == 2
    z = encoder([weighted, plain])
    w = torch.tensor(weights_w)[None, :, None]
    expected = z_plain * w * (z_plain.mean() / (z_plain * w).mean())
    torch.testing.assert_close(z[:1], expected)
    torch.testing.assert_close(z[1:], z_plain)  # per prompt: a weighted neighbour changes nothing
    assert z[0].mean().item() == pytest.approx(z_plain.mean().item(), rel=1e-5)


@needs_tokenizer
def test_long_prompts_are_truncated_like_the_tokenizer() -> None:
    from difflab.nets.text import CLIPTextEncoder

    tokenizer, model = tiny_clip_text()
    prompt = " ".join(["mackerel"] * 120)
    ids, _ = CLIPTextEncoder(tokenizer, model).tokenize(prompt)
    assert ids == tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
