"""Held-out preference metrics of a policy against its reference, from summed answer log-probabilities.

For each held-out pair, log π(chosen|prompt) and log π(rejected|prompt) under the trained policy and under the
reference (the adapter off, or the frozen starting adapter "ref"). From them:
- ``reference_ranking`` / ``policy_ranking``: how often each model gives the chosen answer the higher length-
  normalized log-probability. This is the "before vs after" a DPO run should move (a model that ranks pairs by
  likelihood is a weak reward model of its own; DPO's claim is that training makes it a better one);
- ``implicit_accuracy``: how often the implicit reward β·log(π/π_ref) of chosen exceeds rejected's (ties count half:
  at the start every implicit reward is 0, so the untrained score is exactly 0.5, chance);
- the implicit reward margins.
Each rate comes with a bootstrap CI (``eval/stats.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


def _ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def answer_spans(tokenizer: Any, prompt: list[dict[str, str]], answer: list[dict[str, str]]) -> tuple[list[int], int]:
    """(token ids of prompt + answer, index where the answer starts): the answer is what follows the generation
    prompt, as TRL's DPO tokenization has it."""
    head = _ids(tokenizer, prompt, generation_prompt=True)
    full = _ids(tokenizer, [*prompt, *answer])
    start = len(head) if full[: len(head)] == head else len(_ids(tokenizer, prompt))
    return full, start


@torch.inference_mode()
def sequence_logps(
    model: Any, tokenizer: Any, rows: Sequence[tuple[list[int], int]], batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (sum of the answer tokens' log-probs, answer token count), batched with right padding."""
    device = next(model.parameters()).device
    sums, counts = np.zeros(len(rows)), np.zeros(len(rows))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        width = max(len(rows[i][0]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, : len(rows[i][0])] = torch.tensor(rows[i][0])
            mask[j, : len(rows[i][0])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()
        for j, i in enumerate(idx):
            start, end = rows[i][1], len(rows[i][0])
            sums[i] = float(logps[j, start - 1 : end - 1].sum())  # logits at t predict token t+1
            counts[i] = end - start
    return sums, counts


@contextlib.contextmanager
def reference_of(model: Any) -> Iterator[Any]:
    """The model as its reference: the frozen "ref" adapter when there is one, else the adapters off."""
    if not hasattr(model, "peft_config"):
        raise ValueError("the reference of a fully trained model is a separate model: pass it instead")
    if "ref" in model.peft_config:
        active = model.active_adapter
        model.set_adapter("ref")
        try:
            yield model
        finally:
            model.set_adapter(active)
    else:
        with model.disable_adapter():
            yield model


def _rate(wins: np.ndarray) -> dict[str, float]:
    from tailorlm.eval.stats import bootstrap_ci

    ci = bootstrap_ci(wins, seed=0)
    return {"rate": ci["mean"], "ci_low": ci["low"], "ci_high": ci["high"]}


def _wins(diff: np.ndarray) -> np.ndarray:
    return np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))


def preference_eval(
    model: Any, tokenizer: Any, rows: Sequence[dict], *, beta: float, reference: Any = None, batch_size: int = 8
) -> dict[str, Any]:
    """Rankings of the reference and the policy, implicit-reward accuracy and margins on held-out ``rows``."""
    was_training = model.training
    model.eval()
    spans = [answer_spans(tokenizer, r["prompt"], r["chosen"]) for r in rows]
    spans += [answer_spans(tokenizer, r["prompt"], r["rejected"]) for r in rows]
    n = len(rows)
    policy, counts = sequence_logps(model, tokenizer, spans, batch_size)
    if reference is not None:
        ref, _ = sequence_logps(reference, tokenizer, spans, batch_size)
    else:
        with reference_of(model) as ref_model:
            ref, _ = sequence_logps(ref_model, tokenizer, spans, batch_size)
    model.train(was_training)
    counts = np.maximum(counts, 1)
    implicit = beta * (policy - ref)
    margins = implicit[:n] - implicit[n:]
    return {
        "pairs": n,
        "reference_ranking": _rate(_wins(ref[:n] / counts[:n] - ref[n:] / counts[n:])),
        "policy_ranking": _rate(_wins(policy[:n] / counts[:n] - policy[n:] / counts[n:])),
        "implicit_accuracy": _rate(_wins(margins)),
        "implicit_margin_mean": float(margins.mean()),
        "implicit_chosen_mean": float(implicit[:n].mean()),
        "implicit_rejected_mean": float(implicit[n:].mean()),
        # Mean log π/π_ref over the held-out answers (chosen and rejected): how far the policy moved on this data.
        # Not the KL of the policy's own samples, which needs generation (``tailor align compare``).
        "mean_log_ratio": float((policy - ref).mean()),
    }
