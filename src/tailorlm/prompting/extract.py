"""Read the final answer out of a (chain-of-thought) completion.

Chain-of-thought prompting (Wei et al. 2022, "Chain-of-Thought Prompting Elicits Reasoning in Large Language
Models"; Kojima et al. 2022, "Large Language Models are Zero-Shot Reasoners") makes the model write its reasoning
before the answer, so the completion is no longer the answer: "... 3 + 4 = 7 apples. The answer is 7." Metrics and
self-consistency voting need the answer alone; this module extracts it, with one method per answer shape:

- ``raw``: the whole completion (stripped), for prompts that ask for the answer only;
- ``last_number``: the last number, canonicalized ("1,000.0" → "1000"), lm-evaluation-harness's "flexible-extract";
- ``gsm8k``: the text after the last ``####`` (Cobbe et al. 2021), the "strict-match" counterpart;
- ``label``: one of ``labels``, read from the answer sentence when there is one (see :func:`extract_answer`);
- ``after_marker``: the sentence after the last "The answer is" (Kojima et al.'s answer-extraction step);
- ``regex``: the first group of the last match of a user pattern.

Every method returns ``None`` when the completion holds no answer of its shape: an abstention, which scores as
wrong and never wins a vote, rather than a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal, get_args

from tailorlm.eval.metrics.classification import normalize_label
from tailorlm.eval.metrics.math import extract_gsm8k_answer, extract_last_number, parse_number

ExtractMethod = Literal["raw", "last_number", "gsm8k", "label", "after_marker", "regex"]

# Kojima et al. 2022's zero-shot CoT trigger, the best of the templates they compared (their Table 4).
COT_TRIGGER = "Let's think step by step."
# A fixed closing phrase makes the answer findable: it is what ``after_marker`` looks for by default.
ANSWER_INSTRUCTION = 'Finish with "The answer is X." where X is your final answer.'
# What to append to a user turn (``PromptSpec.chain_of_thought``) for zero-shot CoT with an extractable answer.
CHAIN_OF_THOUGHT_SUFFIX = f"{COT_TRIGGER} {ANSWER_INSTRUCTION}"

# Besides the configured marker, the phrasings models actually use: "The final answer is", "Answer:",
# "Final answer:". "answer is" also covers "the answer is" for a custom marker such as "Result:".
_MARKER_VARIANTS = (r"answer\s+is(?!\w)", r"answer\s*:")
# The answer runs to the end of its sentence or line. A sentence ends at ".", "!" or "?" followed by whitespace or
# the end, so the point inside "3.5" or "e.g.x" does not end it.
_SENTENCE = re.compile(r"(.*?)(?:[.!?](?=\s|$)|\n|$)")
# Markdown emphasis, quotes and backticks around an answer ("**42**", "`yes`") are formatting, not the answer.
_WRAPPERS = " \t*_`\"'"
_TRAILING = ".,;:!?"


def canonical_number(text: str) -> str | None:
    """A number written canonically: ``"1,000.0"`` → ``"1000"``, ``"$5.50"`` → ``"5.5"``, ``"3/4"`` → ``"0.75"``.

    Integers print without a decimal part; other values print as the shortest string that round-trips the float.
    ``None`` when the text is not a number (or is infinite / NaN).
    """
    value = parse_number(text)
    if value is None or not math.isfinite(value):
        return None
    if value.is_integer():
        return str(int(value))
    return repr(value)


def normalize_number(answer: str) -> str:
    """A vote normalizer: numbers compare by value ("18", "18.0", "$18" agree), other text is just stripped."""
    return canonical_number(answer) or answer.strip()


def _after_marker(text: str, marker: str) -> str | None:
    # The LAST occurrence: a chain often says "the answer is not obviously 5, since ..." before concluding.
    marker = marker.strip()
    # Whole words only: "answer is" must not fire inside "the answer isn't".
    own = rf"{re.escape(marker)}(?!\w)" if marker[-1:].isalnum() else re.escape(marker)
    alternatives = "|".join([own, *_MARKER_VARIANTS])
    matches = list(re.finditer(rf"(?<!\w)(?:{alternatives})", text, flags=re.IGNORECASE))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    # "The answer is: $18." / "Answer - 18": a separator may sit between the marker and the answer, and the answer
    # may start on the next line. A dash is a separator only before a space: in "is -4" it is the sign.
    rest = re.sub(r"^\s*(?::|[-–—](?=\s))?\s*", "", rest)
    sentence = _SENTENCE.match(rest)
    answer = (sentence.group(1) if sentence else rest).strip(_WRAPPERS).rstrip(_TRAILING).strip(_WRAPPERS)
    return answer or None


def _regex(text: str, pattern: str) -> str | None:
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    last = matches[-1]
    found = last.group(1) if last.re.groups else last.group(0)
    found = (found or "").strip()
    return found or None


def extract_answer(
    text: str,
    method: ExtractMethod,
    *,
    labels: Sequence[str] | None = None,
    marker: str = "The answer is",
    pattern: str | None = None,
) -> str | None:
    """The final answer in ``text`` by ``method`` (see the module docstring), or ``None`` when there is none.

    - ``last_number`` and ``gsm8k`` return canonical numbers ("#### 1,234" → "1234"); a ``gsm8k`` answer that is
      not a number comes back as written. ``gsm8k`` is strict: no ``####``, no answer.
    - ``after_marker`` returns the rest of the sentence or line after the last ``marker`` (case-insensitive), also
      accepting "answer is" and "Answer:", stripped of markdown emphasis, quotes and trailing punctuation.
    - ``label`` maps the answer sentence (``after_marker``) to one of ``labels`` with ``normalize_label``, and only
      without a marker the whole text. Reasoning mentions the wrong labels too ("not negative, so ..."), and
      ``normalize_label`` alone would pick whichever label the reasoning names first.
    - ``regex`` returns the first capture group of the last match of ``pattern`` (the whole match if it has no
      group). Pass flags inline, e.g. ``(?i)``.
    """
    if method == "raw":
        return text.strip() or None
    if method == "last_number":
        number = extract_last_number(text)
        return canonical_number(number) if number is not None else None
    if method == "gsm8k":
        found = extract_gsm8k_answer(text)
        return (canonical_number(found) or found) if found is not None else None
    if method == "after_marker":
        return _after_marker(text, marker)
    if method == "label":
        if not labels:
            raise ValueError("extract method 'label' needs a non-empty list of labels")
        sentence = _after_marker(text, marker)
        found = normalize_label(sentence, labels) if sentence is not None else None
        return found if found is not None else normalize_label(text, labels)
    if method == "regex":
        if not pattern:
            raise ValueError("extract method 'regex' needs a pattern")
        return _regex(text, pattern)
    raise ValueError(f"unknown extract method {method!r}; choose one of {', '.join(get_args(ExtractMethod))}")


def make_extractor(
    method: ExtractMethod = "after_marker",
    *,
    labels: Sequence[str] | None = None,
    marker: str = "The answer is",
    pattern: str | None = None,
) -> Callable[[str], str | None]:
    """``extract_answer`` with its settings bound, e.g. ``make_extractor(**prompt.answer.model_dump())``.

    Settings are checked here, once, rather than on the first completion.
    """
    if method == "label" and not labels:
        raise ValueError("extract method 'label' needs a non-empty list of labels")
    if method == "regex":
        if not pattern:
            raise ValueError("extract method 'regex' needs a pattern")
        re.compile(pattern)  # a bad pattern fails now, with re's own message
    return partial(extract_answer, method=method, labels=labels, marker=marker, pattern=pattern)
