"""Held-out perplexity, exact and token-weighted, computed the same way before and after training.

    PPL = exp( (1/N) Σ_blocks Σ_t −log p(x_t | earlier tokens of the same document) ),  N = predicted tokens

Each held-out token counts once, whatever block or batch it falls in. That is neither the Trainer's ``eval_loss``
(a mean of per-batch means, which weighs a short last batch like a full one) nor a mean of per-block perplexities
(which overweights short blocks and is biased upward by Jensen's inequality). The first token of each document is
not predicted (its only left context is another document), exactly as in training, so the number is
``exp(training loss)`` measured on unseen documents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed negative log-likelihood and the number of predicted tokens of one batch.

    ``logits``: (batch, T, vocab), the model's outputs; ``labels``: (batch, T), the input ids with -100 where a
    token is not a target. Position t predicts token t+1 (the usual causal-LM shift), so ``logits[:, :-1]`` is
    scored against ``labels[:, 1:]``. The log-softmax runs in float32 and the sum accumulates in float64, so a
    long held-out set loses no precision.
    """
    targets = labels[:, 1:].reshape(-1)
    scores = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    nll = torch.nn.functional.cross_entropy(scores, targets, ignore_index=-100, reduction="none")
    return float(nll.double().sum()), int((targets != -100).sum())


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(mean NLL per token); ``nan`` when there is nothing to score."""
    return math.exp(total_nll / n_tokens) if n_tokens else math.nan


@torch.no_grad()
def heldout_perplexity(
    model: Any, blocks: Sequence[dict[str, Any]], pad_token_id: int, batch_size: int = 4
) -> dict[str, float | int]:
    """Perplexity of ``model`` on packed ``blocks`` (rows from ``pack_blocks``), batched with ``PackedCollator``.

    The model runs in eval mode (no dropout) and goes back to the mode it was in. ``use_cache=False`` matters:
    transformers derives the per-document mask from the position ids only when there is no KV cache.
    """
    from tailorlm.train.pretrain.data import PackedCollator

    collate = PackedCollator(pad_token_id)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        device = next(model.parameters()).device
        for start in range(0, len(blocks), batch_size):
            batch = collate([blocks[i] for i in range(start, min(start + batch_size, len(blocks)))])
            out = model(
                input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device), use_cache=False
            )
            s, n = nll_sum(out.logits, batch["labels"].to(device))
            total, count = total + s, count + n
    finally:
        model.train(was_training)
    return {
        "perplexity": perplexity(total, count),
        "nll_per_token": total / count if count else math.nan,
        "tokens": count,
        "blocks": len(blocks),
    }
