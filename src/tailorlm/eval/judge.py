"""LLM-as-a-judge: pairwise comparison with position swapping, and single-answer grading.

We follow MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"): the judge
prompts are theirs (``prompts/*.jinja``), verdicts are ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (tie) and ratings
``Rating: [[7]]``. Judges favour whichever answer comes first, so every pair is judged twice, as (A, B) and
swapped as (B, A). A verdict counts only when both orders pick the same underlying answer; otherwise the item
is "inconsistent". MT-Bench counts inconsistent as a tie; we report it separately, because a high
inconsistency rate says the judge is guessing and a tie would hide that.

Two ways to read the judge:

- ``mode="generate"``: the judge writes text (an explanation, then the verdict) and we parse it. Works with any
  engine, including OpenAI-compatible endpoints.
- ``mode="logprob"``: the prompt asks for the verdict alone, the assistant turn is started with ``[[``, and we
  compare the judge's next-token probabilities of "A" and "B" (for grading: the expected rating over the digit
  tokens). One forward pass per prompt, no sampling, no parsing failures: far more reliable for a 135M judge,
  which rarely finishes an explanation with a well-formed verdict. It needs the model's logits, so it works
  only with the local ``hf`` engine.

Every prompt of a call goes to the engine in one batch. Long answers are cut to ``max_output_tokens`` each and,
for a local model, to what fits the context window (see ``docs/judge.md``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import jinja2

from tailorlm.errors import TailorError
from tailorlm.models.engines.base import Engine, GenerationParams, Message

if TYPE_CHECKING:
    import torch  # imported lazily at run time: parsing and summaries must not pay for it

JudgeMode = Literal["generate", "logprob"]
OrderVerdict = Literal["A", "B", "tie", "invalid"]  # what the judge said about one presentation order
Winner = Literal["a", "b", "tie", "inconsistent", "invalid"]  # the item's verdict, about the underlying outputs

# The assistant turn is started with these in logprob mode, so the very next token is the verdict or rating.
PAIRWISE_ANSWER_PREFIX = "[["
SINGLE_ANSWER_PREFIX = "Rating: [["
# Judges explain before the verdict (MT-Bench asks them to); 256 tokens holds a short explanation.
DEFAULT_PARAMS = GenerationParams(max_new_tokens=256)
# Without a tokenizer (an HTTP judge) a token budget is approximated in characters.
CHARS_PER_TOKEN = 4
# The least room each answer may keep when a prompt is shrunk to fit a context window.
MIN_OUTPUT_TOKENS = 16

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True, keep_trailing_newline=False
)


@dataclass(frozen=True)
class PairwiseVerdict:
    """The judge's verdict on one pair, from both presentation orders."""

    winner: Winner
    first: OrderVerdict  # order 1: output_a shown as "A"
    second: OrderVerdict  # order 2 (swapped): output_b shown as "A"
    raw: tuple[str, str]  # the judge's text in each order (in logprob mode, the verdict it scored highest)
    margins: tuple[float, float] | None = None  # logprob mode: log P("A") - log P("B") in each order

    @property
    def consistent(self) -> bool:
        """Both orders picked the same underlying output (or both said tie)."""
        return self.winner in ("a", "b", "tie")

    @property
    def margin(self) -> float | None:
        """Position-debiased preference for output_a (logprob mode): the mean of both orders' margins for it.

        Averaging cancels a constant bias towards the first (or second) slot, which is most of what a small
        judge's inconsistency is.
        """
        if self.margins is None:
            return None
        return (self.margins[0] - self.margins[1]) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SingleGrade(TypedDict, total=False):
    score: float | None  # None when no rating could be parsed
    raw: str  # the judge's text (in logprob mode, the most likely rating in MT-Bench format)
    probs: list[float]  # logprob mode: P(rating = k) for k = 1..scale


# --- templates --------------------------------------------------------------------------------------------


def load_template(template: str | os.PathLike[str] | None, default: str) -> jinja2.Template:
    """The packaged prompt ``default`` (``pairwise.jinja`` / ``single.jinja``), or the user's template file."""
    if template is None:
        text = resources.files("tailorlm.eval").joinpath("prompts", default).read_text(encoding="utf-8")
        where = f"tailorlm/eval/prompts/{default}"
    else:
        path = Path(template).expanduser()
        if not path.is_file():
            raise TailorError(
                f"judge template {str(path)!r} not found",
                hint=f"pass the path of a Jinja file; the packaged one is tailorlm/eval/prompts/{default}",
            )
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        return _ENV.from_string(text)
    except jinja2.TemplateSyntaxError as err:
        raise TailorError(f"judge template {where}, line {err.lineno}: {err.message}") from err


def _render(template: jinja2.Template, **variables: Any) -> str:
    try:
        return template.render(**variables).strip()
    except jinja2.UndefinedError as err:
        known = ", ".join(sorted(variables))
        raise TailorError(f"judge template uses an unknown variable: {err.message}", hint=f"known: {known}") from err


# --- parsing generated verdicts ---------------------------------------------------------------------------

# MT-Bench's own format. The last one wins: a judge may quote the format ("[[A]] if A is better...") first.
_BRACKETED = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
# The whole answer (or its first line) is just a label: "A", "b.", "Output (a)" (AlpacaEval), "Assistant B."
_BARE = re.compile(r"^\W*(?:(?i:output|assistant|response|answer)\s*)?(?:\(([AaBb])\)|([AaBb]))\W*$")
# A stated verdict: "Verdict: A", "the better response is B", "Output (b) is better", "I prefer Assistant A".
# The letter is upper case unless in parentheses, so "the winner is a tie" does not read as "a".
_NAMED = r"(?:(?i:output|assistant|response|answer)\s*)?(?:\(([AaBb])\)|([AB]))(?![\w'])"
_STATED = [
    re.compile(
        r"(?i:verdict|winner|better (?:answer|response|output|one)|best (?:answer|response|output)|preferred|"
        r"i prefer|i choose)\s*(?:is|:|=|-)?\s*" + _NAMED
    ),
    re.compile(_NAMED + r"\s*(?i:is (?:clearly |much |slightly )?(?:better|the better|preferred))"),
]
_TIE = re.compile(r"\b(?:tie|draw|equally (?:good|bad|helpful)|both are equal)\b", re.IGNORECASE)


def parse_pairwise_verdict(text: str) -> OrderVerdict:
    """Read the judge's verdict for one order: ``[[A]]``/``[[B]]``/``[[C]]`` first, then looser forms."""
    bracketed = _BRACKETED.findall(text)
    if bracketed:
        last = bracketed[-1].upper()
        return "tie" if last in ("C", "TIE") else last  # type: ignore[return-value]
    stripped = text.strip()
    for candidate in (stripped, stripped.split("\n", 1)[0]):
        if m := _BARE.match(candidate):
            return (m.group(1) or m.group(2)).upper()  # type: ignore[return-value]
    stated = {(m.group(1) or m.group(2)).upper() for pattern in _STATED for m in pattern.finditer(text)}
    if len(stated) == 1:  # both letters stated means the text argues both ways: not a verdict
        return stated.pop()  # type: ignore[return-value]
    if not stated and _TIE.search(text):
        return "tie"
    return "invalid"


# MT-Bench: one_score_pattern "\[\[(\d+\.?\d*)\]\]", with "\[(\d+\.?\d*)\]" as the backup.
_RATING = [
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]"),
    re.compile(r"(?i:rating|score)\s*(?:is|:|=)?\s*(\d+(?:\.\d+)?)"),
    re.compile(r"(\d+(?:\.\d+)?)\s*/\s*\d+"),
]


def parse_rating(text: str, scale: int = 10) -> float | None:
    """The rating in ``text`` (``Rating: [[7]]``, ``[7]``, ``Rating: 7``, ``7/10``); None if absent or off-scale."""
    for pattern in _RATING:
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 1 <= value <= scale else None
    return None


# --- combining the two orders -----------------------------------------------------------------------------


def combine_orders(first: OrderVerdict, second: OrderVerdict) -> Winner:
    """The item's winner from order 1 (output_a shown as A) and order 2 (output_b shown as A).

    Consistent only if both orders name the same underlying output, or both say tie (MT-Bench's rule; a tie
    in one order and a win in the other is inconsistent).
    """
    if first == "invalid" or second == "invalid":
        return "invalid"
    in_first = {"A": "a", "B": "b", "tie": "tie"}[first]
    in_second = {"A": "b", "B": "a", "tie": "tie"}[second]
    return in_first if in_first == in_second else "inconsistent"  # type: ignore[return-value]


def summarize_pairwise(verdicts: Sequence[PairwiseVerdict]) -> dict[str, float | int]:
    """Rates over all items (each rate is 0.0 when there are none).

    ``consistency`` is the fraction of items whose two orders agree; ``invalid_rate`` the fraction where at least
    one order gave no readable verdict. Win and tie rates count consistent items only, so with the inconsistent
    and invalid rates they sum to 1.
    """
    n = len(verdicts)
    count = {w: sum(v.winner == w for v in verdicts) for w in ("a", "b", "tie", "inconsistent", "invalid")}

    def rate(k: int) -> float:
        return k / n if n else 0.0

    return {
        "win_rate_a": rate(count["a"]),
        "win_rate_b": rate(count["b"]),
        "tie_rate": rate(count["tie"]),
        "consistency": rate(count["a"] + count["b"] + count["tie"]),
        "inconsistent_rate": rate(count["inconsistent"]),
        "invalid_rate": rate(count["invalid"]),
        "n": n,
    }


# --- prompt budgets ---------------------------------------------------------------------------------------


class _Budget:
    """Counts and cuts tokens for one engine: exactly with a local tokenizer, else ~4 characters per token."""

    def __init__(self, engine: Engine, reserve: int) -> None:
        self.engine = engine
        self.tokenizer = getattr(engine, "tokenizer", None)
        config = getattr(getattr(engine, "model", None), "config", None)
        # Only a local model has a window we know; an HTTP judge's server enforces its own.
        self.window: int | None = getattr(config, "max_position_embeddings", None) if self.tokenizer else None
        self.reserve = reserve  # tokens kept free after the prompt (generation, or the answer prefix)

    def cut(self, text: str, max_tokens: int | None) -> str:
        if max_tokens is None:
            return text
        if self.tokenizer is None:
            return text[: max_tokens * CHARS_PER_TOKEN]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def prompt_tokens(self, messages: list[Message]) -> int:
        rendered = self.engine.render(messages)  # type: ignore[attr-defined]  # only called with a tokenizer
        return len(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])

    def fit(
        self, build: Callable[[int | None], list[Message]], max_output_tokens: int | None, n_outputs: int
    ) -> list[Message]:
        """``build(limit)`` with the answers cut to ``limit`` tokens, shrunk until the prompt fits the window.

        When it does not fit, the room left by the prompt's fixed part is shared equally among the answers: one
        extra render, and a rule a user can predict.
        """
        messages = build(max_output_tokens)
        if self.window is None or self.prompt_tokens(messages) + self.reserve <= self.window:
            return messages
        fixed = self.prompt_tokens(build(0))
        slack = 8  # tokens can merge differently where a cut answer meets the template's text
        room = (self.window - self.reserve - fixed - slack) // n_outputs
        if room < MIN_OUTPUT_TOKENS:
            raise TailorError(
                f"the judge prompt does not fit the judge's context window ({self.window} tokens): the template and "
                f"instruction alone take {fixed}, plus {self.reserve} kept for the answer",
                hint="use a shorter template, fewer generated tokens, or a judge model with a longer context",
            )
        return build(room if max_output_tokens is None else min(room, max_output_tokens))


# --- pairwise ---------------------------------------------------------------------------------------------


def _check_items(items: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    for i, item in enumerate(items):
        missing = [k for k in keys if not isinstance(item.get(k), str)]
        if missing:
            raise TailorError(f"judge item {i} has no string field {', '.join(map(repr, missing))}")


def judge_pairwise(
    engine: Engine,
    items: Sequence[Mapping[str, Any]],
    *,
    template: str | os.PathLike[str] | None = None,
    params: GenerationParams | None = None,
    mode: JudgeMode = "generate",
    max_output_tokens: int | None = None,
    tie_margin: float = 0.0,
) -> list[PairwiseVerdict]:
    """Judge each ``{"instruction", "output_a", "output_b", "reference"?}`` in both orders, in one batch.

    ``max_output_tokens`` cuts each answer before it goes into the prompt. In logprob mode an order's verdict is
    a tie when ``|log P(A) - log P(B)| <= tie_margin``; "C" is not scored (a forced choice, as in AlpacaEval).
    """
    _check_items(items, ("instruction", "output_a", "output_b"))
    if mode not in ("generate", "logprob"):
        raise TailorError(f"unknown judge mode {mode!r}", hint="use 'generate' or 'logprob'")
    params = params or DEFAULT_PARAMS
    tmpl = load_template(template, "pairwise.jinja")
    logprob = mode == "logprob"
    if logprob:
        _require_logits(engine)
    budget = _Budget(engine, reserve=8 if logprob else params.max_new_tokens)

    def prompt(item: Mapping[str, Any], first: str, second: str) -> list[Message]:
        def build(limit: int | None) -> list[Message]:
            content = _render(
                tmpl,
                instruction=item["instruction"],
                output_a=budget.cut(first, limit),
                output_b=budget.cut(second, limit),
                reference=budget.cut(item["reference"], limit) if item.get("reference") else None,
                logprob=logprob,
            )
            return [{"role": "user", "content": content}]

        return budget.fit(build, max_output_tokens, n_outputs=3 if item.get("reference") else 2)

    # Prompts 2i and 2i+1 are item i in order (A, B) and swapped (B, A).
    prompts = [
        p
        for it in items
        for p in (prompt(it, it["output_a"], it["output_b"]), prompt(it, it["output_b"], it["output_a"]))
    ]
    if not prompts:
        return []

    margins: list[float] | None = None
    if logprob:
        texts = [engine.render(p) + PAIRWISE_ANSWER_PREFIX for p in prompts]  # type: ignore[attr-defined]
        tok = engine.tokenizer  # type: ignore[attr-defined]
        letters = [_token_variants(tok, "A"), _token_variants(tok, "B")]
        columns = sorted({i for group in letters for i in group})
        logp = _next_token_logprobs(engine, [_encode(tok, t) for t in texts], columns, tail=1)[:, 0, :]
        margins = []
        for row in logp.tolist():
            lp_a, lp_b = (_logsumexp([row[columns.index(i)] for i in group]) for group in letters)
            margins.append(lp_a - lp_b)
        order_verdicts: list[OrderVerdict] = [
            "tie" if abs(m) <= tie_margin else ("A" if m > 0 else "B") for m in margins
        ]
        raws = [f"[[{v if v != 'tie' else 'C'}]]" for v in order_verdicts]
    else:
        raws = [c.text for c in engine.generate(prompts, params)]
        order_verdicts = [parse_pairwise_verdict(r) for r in raws]

    return [
        PairwiseVerdict(
            winner=combine_orders(order_verdicts[2 * i], order_verdicts[2 * i + 1]),
            first=order_verdicts[2 * i],
            second=order_verdicts[2 * i + 1],
            raw=(raws[2 * i], raws[2 * i + 1]),
            margins=(margins[2 * i], margins[2 * i + 1]) if margins is not None else None,
        )
        for i in range(len(items))
    ]


# --- single-answer grading --------------------------------------------------------------------------------


def judge_single(
    engine: Engine,
    items: Sequence[Mapping[str, Any]],
    scale: int = 10,
    *,
    template: str | os.PathLike[str] | None = None,
    params: GenerationParams | None = None,
    mode: JudgeMode = "generate",
    max_output_tokens: int | None = None,
) -> list[SingleGrade]:
    """Rate each ``{"instruction", "output", "reference"?}`` from 1 to ``scale`` (MT-Bench single-answer grading).

    In logprob mode the score is the expected rating under the judge's next-token distribution over the ratings
    1..scale (``scale <= 10``, since ratings are read as one digit, plus "0" after "1" for 10).
    """
    _check_items(items, ("instruction", "output"))
    if scale < 2:
        raise TailorError(f"scale must be at least 2, got {scale}")
    if mode not in ("generate", "logprob"):
        raise TailorError(f"unknown judge mode {mode!r}", hint="use 'generate' or 'logprob'")
    logprob = mode == "logprob"
    if logprob:
        _require_logits(engine)
        if scale > 10:
            raise TailorError(f"logprob grading reads one digit, so scale must be at most 10, got {scale}")
    params = params or DEFAULT_PARAMS
    tmpl = load_template(template, "single.jinja")
    budget = _Budget(engine, reserve=8 if logprob else params.max_new_tokens)

    def prompt(item: Mapping[str, Any]) -> list[Message]:
        def build(limit: int | None) -> list[Message]:
            content = _render(
                tmpl,
                instruction=item["instruction"],
                output=budget.cut(item["output"], limit),
                reference=budget.cut(item["reference"], limit) if item.get("reference") else None,
                scale=scale,
                logprob=logprob,
            )
            return [{"role": "user", "content": content}]

        return budget.fit(build, max_output_tokens, n_outputs=2 if item.get("reference") else 1)

    prompts = [prompt(it) for it in items]
    if not prompts:
        return []
    if not logprob:
        return [SingleGrade(score=parse_rating(c.text, scale), raw=c.text) for c in engine.generate(prompts, params)]

    tok = engine.tokenizer  # type: ignore[attr-defined]
    digits = [_single_token(tok, str(k)) for k in range(1, min(scale, 9) + 1)]
    ten = _single_token(tok, "10") if scale == 10 else None
    two_step = scale == 10 and ten is None  # "10" is "1" then "0" (SmolLM splits digits): look one token further
    zero = _single_token(tok, "0") if two_step else None
    if None in digits or (two_step and zero is None):
        raise TailorError("logprob grading needs the judge's tokenizer to have one token per digit 0-9")
    columns = [d for d in digits if d is not None] + [c for c in (ten, zero) if c is not None]
    encoded = [_encode(tok, engine.render(p) + SINGLE_ANSWER_PREFIX) for p in prompts]  # type: ignore[attr-defined]
    if two_step:
        # Appending "1" gives, in one pass, P(first digit) at the second-to-last position and P("0" | "1") last.
        encoded = [[*ids, digits[0]] for ids in encoded]  # type: ignore[list-item]
    logp = _next_token_logprobs(engine, encoded, columns, tail=2 if two_step else 1)

    grades: list[SingleGrade] = []
    for rows in logp.tolist():
        first = rows[0]
        p = [math.exp(first[k]) for k in range(len(digits))]
        if scale == 10 and ten is not None:
            p.append(math.exp(first[len(digits)]))
        elif two_step:
            p_zero = math.exp(rows[1][len(digits)])  # P("0" | "... [[1")
            p.append(p[0] * p_zero)
            p[0] *= 1.0 - p_zero
        total = sum(p)
        probs = [x / total for x in p] if total > 0 else [1.0 / scale] * scale
        score = sum((k + 1) * x for k, x in enumerate(probs))
        best = max(range(scale), key=lambda k: probs[k]) + 1
        grades.append(SingleGrade(score=score, raw=f"Rating: [[{best}]]", probs=probs))
    return grades


# --- next-token probabilities from a local model ----------------------------------------------------------


def _require_logits(engine: Engine) -> None:
    """Logprob mode reads logits, which only a local transformers engine (``HFEngine``) exposes."""
    if not (callable(getattr(engine, "model", None)) and hasattr(engine, "tokenizer") and hasattr(engine, "render")):
        raise TailorError(
            f"mode='logprob' needs a local transformers judge (HFEngine); {type(engine).__name__} gives no "
            "next-token probabilities over the whole vocabulary",
            hint="use mode='generate' with this engine, or build the judge from a System with engine: hf",
        )


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The chat template already holds the special tokens (as in HFEngine._encode).
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = _encode(tokenizer, text)
    return ids[0] if len(ids) == 1 else None


def _token_variants(tokenizer: Any, letter: str) -> list[int]:
    """Token ids that spell ``letter`` next: "A" and " A", since a tokenizer may prefer either after "[["."""
    ids = {i for v in (letter, " " + letter) if (i := _single_token(tokenizer, v)) is not None}
    if not ids:
        raise TailorError(f"the judge's tokenizer has no single token for {letter!r}; use mode='generate'")
    return sorted(ids)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _next_token_logprobs(engine: Any, encoded: list[list[int]], columns: list[int], tail: int) -> torch.Tensor:
    """log P(next token) at each prompt's last ``tail`` positions, for the vocabulary ``columns``.

    Returns a float tensor [n_prompts, tail, len(columns)]. Prompts run ``engine.batch_size`` at a time, longest
    first, left-padded with explicit position ids (so padding shifts no position), and only the last ``tail``
    positions' logits are computed (``logits_to_keep``): a full [batch, length, vocab] tensor would be ~1 GB.
    """
    import torch

    model, tok = engine.model, engine.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    out = torch.empty(len(encoded), tail, len(columns), dtype=torch.float32)
    index = torch.tensor(columns, dtype=torch.long)
    batch_size = int(getattr(engine, "batch_size", 8))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows], dtype=torch.long)
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in rows])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=positions.to(model.device),
                logits_to_keep=tail,
            ).logits  # [batch, tail, vocab]
            logp = logits.float().log_softmax(-1).cpu()[:, :, index]  # [batch, tail, len(columns)]
            for r, i in enumerate(rows):
                out[i] = logp[r]
    return out
