"""The web UI's prompt language (nets/prompts.py): prompt editing, alternation, BREAK, errors, plain text."""

from __future__ import annotations

import pytest

from difflab.nets.prompts import BREAK, PromptSyntaxError, parse_prompt, parse_prompt_weights, plain_text


@pytest.mark.parametrize("prompt,steps,segments", [
    ("a cat", 20, [(20, "a cat")]),
    ("a [dog:cat:0.5] park", 20, [(10, "a dog park"), (20, "a cat park")]),  # a fraction of the run
    ("a [dog:cat:0.5] park", 7, [(3, "a dog park"), (7, "a cat park")]),     # int(0.5 * 7) = 3
    ("a [dog:cat:4] park", 20, [(4, "a dog park"), (20, "a cat park")]),     # a step
    ("[dog:cat:1.0]", 10, [(10, "dog")]),                                    # 1.0 is the whole run, 1 one step
    ("[dog:cat:1]", 10, [(1, "dog"), (10, "cat")]),
    ("[dog:cat:0]", 10, [(10, "cat")]),
    ("x [hat:3]", 5, [(3, "x "), (5, "x hat")]),                             # [to:when]: added after step 3
    ("x [hat::3]", 5, [(3, "x hat"), (5, "x ")]),                            # [from::when]: removed after it
    ("[a|b|c] x", 4, [(1, "a x"), (2, "b x"), (3, "c x"), (4, "a x")]),      # alternation, every step
    ("[a|] x", 3, [(1, "a x"), (2, " x"), (3, "a x")]),
    ("[[a|b]:c:0.5]", 6, [(1, "a"), (2, "b"), (3, "a"), (6, "c")]),          # schedules nest
    ("([dog:cat: 2 ]:1.2), (worst:1.4)", 4, [(2, "(dog:1.2), (worst:1.4)"), (4, "(cat:1.2), (worst:1.4)")]),
    ("ratio a:b [x:y] (c:d)", 5, [(5, "ratio a:b [x:y] (c:d)")]),            # no number: text (de-emphasis)
    ("open [a:b:0.5", 5, [(5, "open [a:b:0.5")]),                            # unclosed: text to the end
    ("x ] y ) z", 5, [(5, "x ] y ) z")]),                                    # unmatched closers: text
    (r"\[a:b:0.5\] \[c|d\]", 5, [(5, r"\[a:b:0.5\] \[c|d\]")]),              # escaped: text
    ("(unclosed [a|b]", 2, [(1, "(unclosed a"), (2, "(unclosed b")]),
])
def test_prompt_schedules(prompt, steps, segments) -> None:
    assert parse_prompt(prompt).segments(steps) == segments


def test_segment_texts_are_the_text_at_each_step() -> None:
    parsed, steps = parse_prompt("[a|b] [c:d:0.3] [e:f:7]"), 10
    assert not parsed.static and parse_prompt("(a:1.2) [b] c:d").static
    for step in range(1, steps + 1):
        want = f"{'ab'[(step - 1) % 2]} {'c' if step <= 3 else 'd'} {'e' if step <= 7 else 'f'}"
        assert parsed.at(step, steps) == want


@pytest.mark.parametrize("prompt", ["[a:b:c]", "x [cat:dog:half] y", "[a:b:[c|d]]"])
def test_a_malformed_when_is_one_error_showing_the_escaped_form(prompt) -> None:
    with pytest.raises(PromptSyntaxError, match=r"(?s)is not a number.*\[dog:cat:0\.5\].*escape them: .*\\\[") as err:
        parse_prompt(prompt)
    assert "`prompt`" in str(err.value)
    assert isinstance(err.value, ValueError)  # a ConfigError: exit status 2 at the entry points


def test_break_is_its_own_chunk_inside_weights() -> None:
    assert parse_prompt_weights("a BREAK (b BREAK c:1.2)BREAK") == [
        ("a", 1.0), BREAK, ("b", 1.2), BREAK, ("c", 1.2), BREAK]
    assert parse_prompt_weights("BREAKFAST, break") == [("BREAKFAST, break", 1.0)]  # the word, in capitals


def test_plain_text_is_the_last_step_without_syntax() -> None:
    assert plain_text("(masterpiece:1.2), a [dog:cat:0.5] BREAK in a [park|garden], [[blurry]]") == \
        "masterpiece, a cat in a park, blurry"
    assert plain_text(r"a \(b\)") == "a (b)"
