"""The prompt language of Stable Diffusion front ends (the AUTOMATIC1111 web UI), parsed in one place.

Weights (how they reach the text embeddings: `nets/text.py`):

    (word)          weight x 1.1               ((word))   x 1.21 (brackets nest by multiplication)
    (word:1.4)      weight x 1.4               [word]     weight / 1.1 (de-emphasis)
    \\( \\) \\[ \\] \\|   literal characters     \\\\         a literal backslash

Changes over the sampling steps (N = the steps the sampler runs; steps are numbered 1 .. N):

    [from:to:when]  `from` in steps 1 .. when, `to` after: "a [dog:cat:0.5]" with N = 20 is "a dog" for 10 steps
    [to:when]       nothing, then `to` after step `when`          [from::when]  `from`, then nothing
    when            a fraction of the run when written with a point (0.5, 1.0: int(when * N)), else a step (10)
    [a|b|c]         alternation: step s uses option (s - 1) mod 3 (a, b, c, a, ...)

    Schedules nest ("[[a|b]:c:0.7]") and combine with weights ("([dog:cat:5]:1.2)"). The web UI counts its steps
    from 0 against these 1-based switch points, so there `from` lasts one step longer; difflab switches after
    exactly `when` steps.

Long prompts and BREAK: a prompt is cut into chunks of 75 tokens (each encoded as [BOS, 75 tokens, EOS]) whose
encodings are concatenated; a chunk that would split text right after a comma within its last 20 tokens ends at
that comma instead (the web UI's "comma padding backtrack"); the word BREAK (in capitals) ends a chunk there.

Errors and leniency: an unclosed bracket applies to the rest of the prompt, an unmatched closing bracket and a `:`
outside brackets are text, `[a:b]` whose tail is not a number is de-emphasised text "a:b"; a three-part
`[a:b:c]` whose `c` is not a number is a `PromptSyntaxError` (a ConfigError) showing the escaped form.
`parse_prompt` gives a `ScheduledPrompt`; its `segments(N)` are the texts and their last steps, and
`parse_prompt_weights` splits one such text into (text, weight) chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from difflab.errors import ConfigError

__all__ = ["BREAK", "DEEMPHASIS", "EMPHASIS", "PromptSyntaxError", "ScheduledPrompt", "parse_prompt",
           "parse_prompt_weights", "plain_text"]

EMPHASIS = 1.1  # "(word)"
DEEMPHASIS = 1 / 1.1  # "[word]"
BREAK = ("BREAK", -1.0)  # the chunk `parse_prompt_weights` gives for the word BREAK (the web UI's marker)

_WEIGHT_TOKEN = re.compile(
    r"""
    \\[()\[\]\\|:]               # escaped bracket, bar, colon or backslash
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
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")


class PromptSyntaxError(ConfigError):
    """A prompt's editing syntax cannot be read; the message shows the prompt and the escaped form."""


def parse_prompt_weights(prompt: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) chunks: "a (red:1.5) [dog]" -> [("a ", 1), ("red", 1.5), (" ", 1),
    ("dog", 1/1.1)]; the word BREAK becomes the chunk `BREAK` (weight -1)."""
    chunks: list[list] = []  # [text, weight], weights multiplied in place as groups close
    round_open: list[int] = []  # chunk index where each open "(" starts
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for chunk in chunks[start:]:
            chunk[1] *= factor

    for match in _WEIGHT_TOKEN.finditer(prompt):
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
    return _with_breaks(_merged(chunks)) or [("", 1.0)]


def _merged(chunks: list[list]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    for text, w in chunks:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + text, w)
        else:
            merged.append((text, w))
    return merged


def _with_breaks(chunks: list[tuple[str, float]]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for text, w in chunks:
        parts = _BREAK.split(text)
        for k, part in enumerate(parts):
            if k > 0:
                out.append(BREAK)
            if part:
                out.append((part, w))
    return out


# ---- the schedule tree: text, emphasis groups kept as text, [from:to:when], [a|b] ----


@dataclass(frozen=True)
class _Scheduled:
    before: tuple
    after: tuple
    when: str


@dataclass(frozen=True)
class _Alternate:
    options: tuple


class _Parser:
    """Recursive descent over the web UI's prompt grammar (module docstring); items are str | _Scheduled |
    _Alternate, emphasis brackets stay text for `parse_prompt_weights`."""

    def __init__(self, prompt: str) -> None:
        self.s, self.pos = prompt, 0

    def items(self, stops: str = "") -> list:
        """Items up to (not including) a character of `stops` at this nesting level, or the end."""
        out: list = []
        while self.pos < len(self.s) and self.s[self.pos] not in stops:
            c = self.s[self.pos]
            if c == "\\":
                out.append(self.s[self.pos : self.pos + 2])
                self.pos += 2
            elif c == "(":
                self.pos += 1
                inner = self.items(")")
                closed = self.pos < len(self.s)
                self.pos += closed
                out += ["(", *inner, ")" if closed else ""]
            elif c == "[":
                out += self.bracket()
            else:
                out.append(c)
                self.pos += 1
        return out

    def bracket(self) -> list:
        """`[...]` at self.pos: prompt editing, alternation, or de-emphasised text."""
        start = self.pos
        self.pos += 1
        parts, seps = [self.items(":|]")], []
        while self.pos < len(self.s) and self.s[self.pos] in ":|":
            seps.append(self.s[self.pos])
            self.pos += 1
            parts.append(self.items(":|]"))
        if self.pos >= len(self.s):  # unclosed: "[" is de-emphasis to the end
            return ["[", *_join(parts, seps)]
        self.pos += 1
        if seps and set(seps) == {"|"}:
            return [_Alternate(tuple(tuple(p) for p in parts))]
        if seps and set(seps) == {":"} and len(parts) in (2, 3):
            when = _NUMBER.fullmatch(_flat_text(parts[-1]))
            if when is not None:
                before = tuple(parts[0]) if len(parts) == 3 else ()
                return [_Scheduled(before, tuple(parts[-2]), when.group(1))]
            if len(parts) == 3:
                raise self.error(start, _flat_text(parts[-1]))
        return ["[", *_join(parts, seps), "]"]

    def error(self, start: int, when: str) -> PromptSyntaxError:
        text = self.s[start : self.pos]
        escaped = self.s[:start] + text.replace("[", "\\[").replace("]", "\\]") + self.s[self.pos :]
        return PromptSyntaxError(
            f"The prompt {self.s!r} has prompt editing {text}, whose last part {when.strip()!r} is not a number: "
            "write [from:to:when] with when a fraction of the steps (0.5) or a step (10), e.g. [dog:cat:0.5]. "
            f"For literal brackets escape them: {escaped} (config keys `prompt`, `negative_prompt`, `prompts`).")


def _join(parts: list[list], seps: list[str]) -> list:
    out = list(parts[0])
    for sep, part in zip(seps, parts[1:]):
        out += [sep, *part]
    return out


def _flat_text(items: list) -> str:
    return "".join(i if isinstance(i, str) else "\0" for i in items)  # "\0": a nested schedule is no number


def _when(text: str, steps: int) -> int:
    """The last step of `from` (module docstring): int(w * N) for a fraction written with a point, else w."""
    value = float(text)
    return min(steps, int(value * steps if "." in text else value))


def _render(items: tuple | list, step: int, steps: int) -> str:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, _Scheduled):
            out.append(_render(item.before if step <= _when(item.when, steps) else item.after, step, steps))
        else:
            out.append(_render(item.options[(step - 1) % len(item.options)], step, steps))
    return "".join(out)


def _dynamic(items: tuple | list) -> bool:
    return any(not isinstance(i, str) for i in items)


@dataclass(frozen=True)
class ScheduledPrompt:
    """A parsed prompt: its text at each step of an N-step run (`segments`)."""

    prompt: str
    items: tuple

    @property
    def static(self) -> bool:
        """Whether the text is the same at every step (no [from:to:when], no [a|b])."""
        return not _dynamic(self.items)

    def at(self, step: int, steps: int) -> str:
        """The text at step `step` (1 .. steps) of a run of `steps` steps."""
        return _render(self.items, step, steps)

    def segments(self, steps: int) -> list[tuple[int, str]]:
        """[(last step, text), ...] covering steps 1 .. steps, neighbours of equal text merged."""
        if self.static:
            return [(max(1, steps), self.at(1, steps))]
        out: list[tuple[int, str]] = []
        for step in range(1, max(1, steps) + 1):
            text = self.at(step, steps)
            if out and out[-1][1] == text:
                out[-1] = (step, text)
            else:
                out.append((step, text))
        return out


@lru_cache(maxsize=4096)
def parse_prompt(prompt: str) -> ScheduledPrompt:
    """The prompt's schedule tree (module docstring); a `PromptSyntaxError` for a malformed `[a:b:c]`."""
    items = _Parser(str(prompt)).items()  # an unmatched "]" or ")" at the top level is text
    return ScheduledPrompt(prompt, tuple(_coalesce(items)))


def _coalesce(items: list) -> list:
    """Neighbouring strings joined (shorter trees, faster rendering)."""
    out: list = []
    for item in items:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += item
        elif isinstance(item, _Scheduled):
            out.append(_Scheduled(tuple(_coalesce(list(item.before))), tuple(_coalesce(list(item.after))), item.when))
        elif isinstance(item, _Alternate):
            out.append(_Alternate(tuple(tuple(_coalesce(list(o))) for o in item.options)))
        elif item != "":
            out.append(item)
    return out


def plain_text(prompt: str, steps: int = 1) -> str:
    """What the image should show, for CLIP score: the text at the last step without weights and BREAKs."""
    text = parse_prompt(prompt).at(steps, steps)
    return " ".join("".join(" " if (t, w) == BREAK else t for t, w in parse_prompt_weights(text)).split())
