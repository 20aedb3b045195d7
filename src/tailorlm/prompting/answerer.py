"""From inputs to final answers under a prompt program: demonstrations per input, the context budget,
sampling several chains for self-consistency, and reading the answer out of each completion.

The eval runner and `tailor prompt` use these three steps around the Engine (and the prediction cache):

    requests = build_requests(prompt, inputs, tokenizer)     # chat messages per input
    n, params = sampling_plan(prompt, params)               # n completions per input
    answers = [finalize(prompt, samples) for samples in …]  # extracted (and voted) answers
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tailorlm.core.system import FewShotExample, PromptSpec
from tailorlm.models.engines.base import Completion, GenerationParams, Message, Usage
from tailorlm.prompting.program import render_messages


@dataclass
class Answer:
    """The final answer for one input, with what produced it."""

    text: str  # extracted (and voted) answer; the raw completion when no extraction is configured
    raw: str  # the first completion's full text (the reasoning chain, for CoT)
    usage: Usage  # summed over all sampled chains
    latency_s: float
    votes: dict[str, int] | None = None  # answer → count, for self-consistency
    agreement: float | None = None  # share of chains that gave the winning answer
    sources: list[dict[str, Any]] | None = None  # RAG: the passages shown, numbered from 1
    citations: list[dict[str, Any]] | None = None  # RAG: the shown passages the answer cites as [n]
    abstained: bool = False  # RAG: the evidence was too weak, so the System said it does not know
    probabilities: dict[str, float] | None = None  # head Systems: label → calibrated probability


def build_requests(prompt: PromptSpec | None, inputs: Sequence[str], tokenizer: Any = None) -> list[list[Message]]:
    """Chat messages for every input: the program's demonstrations (selected per input when configured),
    trimmed to ``max_prompt_tokens`` when a tokenizer is given."""
    if prompt is None:
        return [render_messages(None, x) for x in inputs]
    demos: list[list[FewShotExample]] = [list(prompt.few_shot)] * len(inputs)
    if prompt.selection is not None and prompt.few_shot:
        demos = _select(prompt, inputs)
    requests = []
    for x, chosen in zip(inputs, demos, strict=True):
        if prompt.max_prompt_tokens and tokenizer is not None and chosen:
            from tailorlm.prompting.selection import count_tokens, fit_to_budget

            dicts = fit_to_budget(
                [d.model_dump() for d in chosen],
                lambda ds, x=x: count_tokens(tokenizer, render_messages(prompt, x, _examples(ds))),
                prompt.max_prompt_tokens,
            )
            chosen = _examples(dicts)
        requests.append(render_messages(prompt, x, chosen))
    return requests


def _examples(dicts: Sequence[dict[str, Any]]) -> list[FewShotExample]:
    return [FewShotExample.model_validate(d) for d in dicts]


def _select(prompt: PromptSpec, inputs: Sequence[str]) -> list[list[FewShotExample]]:
    from tailorlm.prompting.selection import make_selector

    sel = prompt.selection
    assert sel is not None
    embedder = None
    if sel.strategy in ("semantic", "mmr"):
        from tailorlm.prompting.embed import Embedder

        embedder = Embedder(sel.embedder)
    selector = make_selector(
        sel.strategy,
        [d.model_dump() for d in prompt.few_shot],
        k=sel.k,
        seed=sel.seed,
        embedder=embedder,
        mmr_lambda=sel.mmr_lambda,
    )
    return [_examples(chosen) for chosen in selector.select_many(list(inputs))]


def sampling_plan(prompt: PromptSpec | None, params: GenerationParams) -> tuple[int, GenerationParams]:
    """How many completions each input needs, and with which decoding settings."""
    sc = prompt.self_consistency if prompt else None
    if sc is None:
        return 1, params
    seed = params.seed if params.seed is not None else 0
    return sc.n, params.model_copy(update={"temperature": sc.temperature, "seed": seed})


def extract(prompt: PromptSpec | None, text: str) -> str | None:
    if prompt is None or prompt.answer is None or prompt.answer.method == "raw":
        return text
    from tailorlm.prompting.extract import extract_answer

    spec = prompt.answer
    return extract_answer(text, spec.method, labels=spec.labels, marker=spec.marker, pattern=spec.pattern)


def _vote_normalizer(prompt: PromptSpec | None) -> Any:
    """Answers that mean the same must count as one vote: "18", "18.0" and "$18" for numbers; case, articles and
    punctuation for free text (SQuAD normalization)."""
    method = prompt.answer.method if prompt and prompt.answer else "raw"
    if method in ("last_number", "gsm8k"):
        from tailorlm.prompting.extract import normalize_number

        return normalize_number
    from tailorlm.eval.metrics.qa import normalize_answer

    return normalize_answer


def finalize(prompt: PromptSpec | None, samples: Sequence[Completion]) -> Answer:
    """One input's answer from its completion(s): extract from each, then majority-vote when there are several."""
    usage = Usage(
        prompt_tokens=sum(c.usage.prompt_tokens for c in samples),
        completion_tokens=sum(c.usage.completion_tokens for c in samples),
    )
    latency = max(c.latency_s for c in samples)
    answers = [extract(prompt, c.text) for c in samples]
    if len(samples) == 1:
        return Answer(
            text=answers[0] or "",
            raw=samples[0].text,
            usage=usage,
            latency_s=latency,
            probabilities=samples[0].probabilities,
        )
    from tailorlm.prompting.consistency import vote

    result = vote(answers, normalize=_vote_normalizer(prompt))
    return Answer(
        text=result.answer or "",
        raw=samples[0].text,
        usage=usage,
        latency_s=latency,
        votes=dict(result.distribution),
        agreement=result.agreement,
    )


def abstention(system: Any) -> Answer:
    """The answer a RAG System gives, without generating, when its best evidence is below ``min_score``."""
    message = system.retriever.abstain_message
    return Answer(text=message, raw=message, usage=Usage(), latency_s=0.0, abstained=True)


def attach_sources(answer: Answer, context: Any) -> Answer:
    """Add a RAG context's sources and the answer's citations; the scored text drops the [n] markers."""
    from tailorlm.rag.answer import strip_citations

    answer.sources = context.sources_json()
    answer.citations = [c.as_json() for c in context.citations(answer.raw)]
    if not answer.abstained:
        answer.text = strip_citations(answer.text)
    return answer
