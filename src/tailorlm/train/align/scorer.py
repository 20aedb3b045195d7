"""A trained reward model as a scorer: r(prompt, answer) for best-of-N, RL, ``tailor data pairs`` and the probes.

    scorer = RewardModelScorer("runs/…-reward/artifacts")
    scorer.score([[{"role": "user", "content": "hi"}]], ["Hello! How can I help?"])   # → [1.37]

A conversation is tokenized exactly as TRL's RewardTrainer tokenized it in training (the chat template over the
prompt and the answer, no generation prompt), so the score at inference is the score the model learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tailorlm.errors import ConfigError


def _ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    ids = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@torch.inference_mode()
def reward_scores(
    model: Any, tokenizer: Any, conversations: Sequence[Sequence[Mapping[str, str]]], batch_size: int = 8
) -> list[float]:
    """The scalar head's output for each whole conversation (prompt turns and the answer), in input order.

    Rows are batched by length (less padding); padding is on the left, so each row's last real token, where the
    head reads, sits at the last position (transformers finds it from ``pad_token_id`` either way).
    """
    encoded = [_ids(tokenizer, c) for c in conversations]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = [0.0] * len(encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):
            ids[j, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[j, width - len(encoded[i]) :] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        for j, i in enumerate(rows):
            out[i] = float(logits[j, 0])
    return out


def check_reward_model(path: str | Path) -> None:
    """Fail now, before any generation, if ``path`` is not a reward-model System (no weights are loaded)."""
    from tailorlm.core.system import System

    system = System.load(path)
    if system.head is None or system.head.problem != "regression":
        raise ConfigError(
            f"{path} is not a reward model: it has no regression head", hint="train one with `tailor train reward`"
        )


class RewardModelScorer:
    """Load a reward-model System (``tailor train reward``'s artifacts, or its system.yaml) and score answers."""

    def __init__(self, path: str | Path, *, batch_size: int = 8, device: str = "auto") -> None:
        from tailorlm.core.system import System
        from tailorlm.models.engines.head import HeadEngine

        check_reward_model(path)
        system = System.load(path)
        self.engine = HeadEngine(system, device=device, batch_size=batch_size)
        self.name = system.name or str(path)
        self.max_length = system.head.max_length
        self.batch_size = batch_size

    def score(self, prompts: Sequence[Sequence[Mapping[str, str]]], completions: Sequence[str]) -> list[float]:
        """r(prompt, completion) for each pair; prompts are chat message lists, completions the assistant's text."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        conversations = [
            self._fit([dict(m) for m in p], {"role": "assistant", "content": c})
            for p, c in zip(prompts, completions, strict=True)
        ]
        return reward_scores(self.engine.model, self.engine.tokenizer, conversations, batch_size=self.batch_size)

    def _fit(self, prompt: list[dict[str, str]], answer: dict[str, str]) -> list[dict[str, str]]:
        """The conversation as training saw it: the prompt's oldest exchanges dropped until it fits the head's
        ``max_length`` (``data.fit_rows``); a last exchange longer than that is scored whole."""
        from tailorlm.train.align.data import trim_oldest

        while len(_ids(self.engine.tokenizer, [*prompt, answer])) > self.max_length:
            shorter = trim_oldest(prompt)
            if shorter is None:
                break
            prompt = shorter
        return [*prompt, answer]


def reward_pairwise(scorer: RewardModelScorer, items: Sequence[Mapping[str, str]]) -> list[Any]:
    """The judge slot filled by a reward model: ``judge_pairwise``'s items and verdicts, so ``summarize_pairwise``
    and the AlpacaEval agreement check work unchanged.

    Items carry ``instruction``, ``output_a`` and ``output_b``. A reward model scores each answer on its own, so it
    has no position bias: both "orders" give the same verdict, and ``margins`` holds r(a) - r(b) (the margin of a
    logprob-mode judge has the same sign convention).
    """
    from tailorlm.eval.judge import PairwiseVerdict

    prompts = [[{"role": "user", "content": it["instruction"]}] for it in items]
    a = scorer.score(prompts, [it["output_a"] for it in items])
    b = scorer.score(prompts, [it["output_b"] for it in items])
    verdicts = []
    for ra, rb in zip(a, b, strict=True):
        order = "A" if ra > rb else "B" if rb > ra else "tie"
        winner = {"A": "a", "B": "b", "tie": "tie"}[order]
        swapped = {"A": "B", "B": "A", "tie": "tie"}[order]
        raw = (f"r(a)={ra:.4f} r(b)={rb:.4f}", f"r(b)={rb:.4f} r(a)={ra:.4f}")
        verdicts.append(PairwiseVerdict(winner, order, swapped, raw, margins=(ra - rb, rb - ra)))  # type: ignore[arg-type]
    return verdicts
