"""Curriculum learning: train on easy records first (Bengio et al. 2009, "Curriculum Learning").

    training: {curriculum: length}        # or loss; none (the default) keeps the Trainer's shuffled order
    training: {curriculum: loss, curriculum_reverse: true}   # the anti-curriculum ablation: hard first

Difficulty is measured on the rows exactly as the Trainer will see them (TRL's tokenized ``input_ids`` and
``labels``), so "length" and "loss" describe what is trained on, not the raw text:

- ``length``: the number of tokens in the row (prompt + answer), a cheap proxy used by many curricula
  (e.g. Platanios et al. 2019, "Competence-based Curriculum Learning" uses sentence length);
- ``loss``: the *base* model's mean cross-entropy on the trained (label != -100) tokens, computed once, batched,
  without gradients, with any adapter switched off (Xu et al. 2020, "Curriculum Learning for NLU", scores
  difficulty with a model's own loss).

The order is applied by reordering ``trainer.train_dataset`` and training with transformers'
``train_sampling_strategy="sequential"`` (a ``SequentialSampler``), so no Trainer subclass is needed. Every epoch
walks the same easy→hard order. Ties keep the data's order (a stable sort), so the order is deterministic.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Literal

log = logging.getLogger("tailorlm.train.curriculum")

Curriculum = Literal["none", "length", "loss"]


def row_lengths(dataset: Any) -> list[int]:
    """Tokens per tokenized row (``input_ids``): the ``length`` difficulty."""
    return [len(ids) for ids in dataset["input_ids"]]


def row_losses(model: Any, dataset: Any, collator: Any, *, batch_size: int = 8) -> list[float]:
    """The model's mean cross-entropy per row over its trained tokens (labels != -100), without gradients.

    Adapters (PEFT) are disabled while scoring, so this is the base model's loss; a row with no trained token
    scores 0. Dropout is off (eval mode) and the model's mode is restored afterwards.
    """
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # A freshly initialised LoRA adapter is already a no-op (B = 0), but prompt/prefix tuning is not: switch off.
    no_adapter = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    losses: list[float] = []
    try:
        with torch.no_grad(), no_adapter:
            for start in range(0, len(dataset), batch_size):
                rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                batch = collator(rows)
                ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
                mask = batch.get("attention_mask")
                logits = model(input_ids=ids, attention_mask=None if mask is None else mask.to(device)).logits
                # Token t predicts token t+1: logits [B, T-1, V] against labels [B, T-1].
                logits, target = logits[:, :-1].float(), labels[:, 1:]
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="none"
                ).view(target.shape)
                counted = (target != -100).sum(dim=1)
                per_row = nll.sum(dim=1) / counted.clamp(min=1)
                losses.extend(per_row.tolist())
    finally:
        model.train(was_training)
    return losses


def curriculum_order(scores: Sequence[float], *, reverse: bool = False) -> list[int]:
    """Row indices from easiest (lowest score) to hardest; ``reverse`` gives hardest first. Ties keep data order."""
    # Negating the scores (not reversing the sorted list) keeps ties in data order in the anti-curriculum too.
    sign = -1.0 if reverse else 1.0
    return sorted(range(len(scores)), key=lambda i: sign * scores[i])


def apply_curriculum(trainer: Any, kind: Curriculum, *, reverse: bool = False) -> list[float] | None:
    """Reorder ``trainer.train_dataset`` easy→hard by ``kind``; returns the scores in the new order.

    The Trainer must be built with ``train_sampling_strategy="sequential"`` or it reshuffles the order away.
    """
    if kind == "none":
        return None
    if trainer.args.train_sampling_strategy != "sequential":
        raise ValueError("a curriculum needs train_sampling_strategy='sequential' (the random sampler reshuffles)")
    dataset = trainer.train_dataset
    if kind == "length":
        scores: list[float] = [float(n) for n in row_lengths(dataset)]
    elif kind == "loss":
        scores = row_losses(trainer.model, dataset, trainer.data_collator, batch_size=trainer.args.eval_batch_size)
    else:
        raise ValueError(f"unknown curriculum {kind!r}")
    order = curriculum_order(scores, reverse=reverse)
    trainer.train_dataset = dataset.select(order)
    ordered = [scores[i] for i in order]
    log.info(
        "curriculum %s%s over %d rows: %s %.3g → %.3g",
        kind,
        " (reversed)" if reverse else "",
        len(order),
        kind,
        ordered[0] if ordered else float("nan"),
        ordered[-1] if ordered else float("nan"),
    )
    return ordered
