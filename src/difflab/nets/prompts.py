"""Prompt weighting in the syntax of Stable Diffusion front ends (AUTOMATIC1111 web UI).

    (word)        weight x 1.1            ((word))     x 1.21 (brackets nest by multiplication)
    (word:1.4)    weight x 1.4            [word]       weight / 1.1 (de-emphasis)
    \\( \\) \\[ \\]   literal brackets        \\\\           a literal backslash

An unclosed bracket applies to the rest of the prompt; an unmatched closing bracket, a `:` outside
`(...:w)` and a lone backslash are kept as text. `parse_prompt_weights` returns (text, weight) chunks,
neighbours of equal weight merged. How the weights reach the text embeddings: `nets/text.py`.
"""

from __future__ import annotations

import re

__all__ = ["parse_prompt_weights", "EMPHASIS", "DEEMPHASIS"]

EMPHASIS = 1.1  # "(word)"
DEEMPHASIS = 1 / 1.1  # "[word]"

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                 # escaped bracket or backslash
  | \\                           # lone backslash: literal
  | \(                           # open emphasis
  | \[                           # open de-emphasis
  | :\s*([+-]?[.\d]+)\s*\)       # ":1.4)" closes a weighted group
  | \)                           # close emphasis
  | \]                           # close de-emphasis
  | [^\\()\[\]:]+                # plain text
  | :                            # a colon that is not a weight
""",
    re.X,
)


def parse_prompt_weights(prompt: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) chunks: "a (red:1.5) [dog]" -> [("a ", 1), ("red", 1.5), (" ", 1), ("dog", 1/1.1)]."""
    chunks: list[list] = []  # [text, weight], weights multiplied in place as groups close
    round_open: list[int] = []  # chunk index where each open "(" starts
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for chunk in chunks[start:]:
            chunk[1] *= factor

    for match in _TOKEN.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            chunks.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(chunks))
        elif token == "[":
            square_open.append(len(chunks))
        elif weight is not None and round_open:
            scale_from(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale_from(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale_from(square_open.pop(), DEEMPHASIS)
        else:  # text, or a bracket / weight with nothing open: literal
            chunks.append([token, 1.0])
    for start in round_open:  # unclosed brackets extend to the end
        scale_from(start, EMPHASIS)
    for start in square_open:
        scale_from(start, DEEMPHASIS)
    merged: list[tuple[str, float]] = []
    for text, w in chunks:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + text, w)
        else:
            merged.append((text, w))
    return merged or [("", 1.0)]
