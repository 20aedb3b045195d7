"""Self-consistency: sample several reasoning chains and take the majority answer.

Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language Models" (ICLR). Greedy
chain-of-thought decodes one reasoning path; a wrong step anywhere makes the answer wrong. Sampling ``n`` diverse
paths and voting on their final answers marginalizes over the paths: correct reasoning tends to converge on the
same answer, errors scatter. The unweighted majority vote is the paper's main method (they find it about as good
as probability-weighted voting), and the vote share is a useful confidence signal (accuracy rises with agreement).

Two pure pieces, so each is testable alone: :func:`vote` over extracted answers, and :func:`self_consistency`,
which samples with one batched engine call and votes per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tailorlm.models.engines.base import Completion, Engine, GenerationParams, Message, Request, Usage

# Wang et al. 2023 sample at T = 0.7 for GPT-3 and PaLM (T = 0.5 for UL2 and LaMDA); 0.7 is also
# ``SelfConsistency.temperature``'s default. Used when the caller's params are greedy, since greedy chains are all
# the same and a vote over copies means nothing.
DEFAULT_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Vote:
    """The outcome of a majority vote over ``total`` answers."""

    answer: str | None
    """The winning answer as first written (not normalized), or ``None`` when every answer was ``None``."""
    count: int
    """How many answers agree with the winner (after normalization)."""
    total: int
    """How many answers were cast, ``None`` (no extractable answer) included."""
    distribution: dict[str, int]
    """Normalized answer → count, most votes first, ties in order of first appearance. ``None`` is left out."""
    agreement: float = field(init=False)
    """``count / total``: the share of chains that agree with the winner (0.0 when nothing won)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "agreement", self.count / self.total if self.total else 0.0)


def vote(answers: Sequence[str | None], normalize: Callable[[str], str] | None = None) -> Vote:
    """Majority vote (Wang et al. 2023). Ties go to the answer that appeared first, so the result is deterministic.

    ``normalize`` decides which answers are the same, e.g. ``normalize_number`` ("18" = "18.0") or the SQuAD
    ``normalize_answer`` for free text. ``None`` answers (nothing extractable) count in ``total``, so they lower
    ``agreement``, but never win unless every answer is ``None``.
    """
    if not answers:
        raise ValueError("vote needs at least one answer")
    norm = normalize or (lambda a: a)
    counts: dict[str, int] = {}  # insertion order = order of first appearance
    surface: dict[str, str] = {}  # normalized → the first answer written that way
    for answer in answers:
        if answer is None:
            continue
        key = norm(answer)
        counts[key] = counts.get(key, 0) + 1
        surface.setdefault(key, answer)
    # sorted() is stable, so keys with equal counts keep their first-appearance order.
    distribution = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    if not distribution:
        return Vote(answer=None, count=0, total=len(answers), distribution={})
    winner, count = next(iter(distribution.items()))
    return Vote(answer=surface[winner], count=count, total=len(answers), distribution=distribution)


@dataclass(frozen=True)
class SCResult:
    """Self-consistency for one request: the voted answer, the vote, and every sampled chain."""

    answer: str | None
    vote: Vote
    completions: list[Completion]
    usage_total: Usage
    """Tokens summed over the ``n`` chains: what the answer cost (prompt tokens are counted once per chain)."""


def self_consistency(
    engine: Engine,
    requests: Sequence[str | Sequence[Message] | Request],
    params: GenerationParams,
    *,
    n: int,
    extract: Callable[[str], str | None],
    seed: int = 0,
    normalize: Callable[[str], str] | None = None,
) -> list[SCResult]:
    """Sample ``n`` chains per request, extract each chain's answer, and majority-vote per request.

    - Sampling: if ``params`` is greedy, temperature becomes ``DEFAULT_TEMPERATURE`` (0.7, Wang et al. 2023);
      otherwise the caller's temperature and top_p are kept.
    - One batched ``engine.generate`` call: every request repeated ``n`` times, so the engine batches all chains.
    - Reproducibility: ``params.seed`` is set to ``seed``. ``HFEngine`` seeds torch once per batch, so the same
      requests, ``n``, seed and engine ``batch_size`` give the same chains. Beware that this also means two
      batches holding identical rows draw identical samples: keep ``n`` within the engine's ``batch_size``.
    - ``extract`` maps a completion's text to its answer (see ``make_extractor``); ``normalize`` is passed to
      :func:`vote`.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    update: dict[str, object] = {"seed": seed}
    if params.greedy:
        update["temperature"] = DEFAULT_TEMPERATURE
    sampling = params.model_copy(update=update)
    # Request-major layout: chains of request i are rows [i*n, (i+1)*n).
    batch = [request for request in requests for _ in range(n)]
    completions = engine.generate(batch, sampling)
    if len(completions) != len(batch):
        raise RuntimeError(f"engine {engine.name!r} returned {len(completions)} completions for {len(batch)} requests")
    results = []
    for i in range(len(requests)):
        chains = completions[i * n : (i + 1) * n]
        outcome = vote([extract(c.text) for c in chains], normalize)
        usage = Usage(
            prompt_tokens=sum(c.usage.prompt_tokens for c in chains),
            completion_tokens=sum(c.usage.completion_tokens for c in chains),
        )
        results.append(SCResult(answer=outcome.answer, vote=outcome, completions=chains, usage_total=usage))
    return results
