"""Did preference training pay? Two Systems answer the same held-out prompts; a reward model picks the better answer.

    report = compare_with_reward(policy, start, prompts, scorer)
    report["win_rate"]      # share of prompts where r(policy's answer) > r(start's), ties ½, with a bootstrap CI

Both Systems answer greedily (the way they are evaluated and served), through their engines. When the policy is one
LoRA adapter over the start's weights (a DPO run from the base), the KL to the start is also estimated on answers
*sampled* from the policy: KL(π‖π_ref) = E_{y~π}[log π(y|x) − log π_ref(y|x)] (the k1 estimator: unbiased, and its
mean is what RL's KL penalty bounds). A greedy answer is not a sample, so it would not do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tailorlm.core.system import System
from tailorlm.models.engines.base import GenerationParams

Messages = list[dict[str, str]]


def _answers(system: System, prompts: Sequence[Messages], params: GenerationParams, on_progress: Any) -> list[str]:
    from tailorlm.models.build import build_engine

    engine = build_engine(system, batch_size=16)
    return [c.text for c in engine.generate([list(p) for p in prompts], params, on_progress=on_progress)]


def kl_of_samples(
    model: Any, tokenizer: Any, prompts: Sequence[Messages], *, max_new_tokens: int, seed: int = 0, batch_size: int = 8
) -> dict[str, Any]:
    """Mean sequence KL(π‖π_ref) over one answer per prompt sampled from ``model`` (a PEFT model: its reference is
    the adapter off, or its frozen "ref" adapter).

    The answer is sampled at temperature 1 (the policy's own distribution); its log-probability is then read under
    the policy and the reference.
    """
    import torch

    from tailorlm.train.align.preference_eval import answer_spans, reference_of, sequence_logps

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    samples: list[str] = []
    try:
        for s in range(0, len(prompts), batch_size):
            chunk = prompts[s : s + batch_size]
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                out = model.generate(
                    **enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )  # fmt: skip
            samples += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        torch.set_rng_state(generator_state)
        tokenizer.padding_side = side
    answers = [[{"role": "assistant", "content": a}] for a in samples]
    spans = [answer_spans(tokenizer, list(p), a) for p, a in zip(prompts, answers, strict=True)]
    pi, counts = sequence_logps(model, tokenizer, spans, batch_size)
    with reference_of(model) as ref_model:
        ref, _ = sequence_logps(ref_model, tokenizer, spans, batch_size)
    model.train(was_training)
    kl = pi - ref
    return {
        "estimator": "k1 on one answer sampled from the policy per prompt (temperature 1)",
        "kl_mean": float(kl.mean()),
        "kl_per_token": float(kl.sum() / max(counts.sum(), 1)),
        "kl_std_error": float(kl.std(ddof=1) / np.sqrt(len(kl))) if len(kl) > 1 else None,
        "samples": len(kl),
        "max_new_tokens": max_new_tokens,
    }


def sampled_kl(
    policy: System, prompts: Sequence[Messages], *, max_new_tokens: int, seed: int = 0, batch_size: int = 8
) -> dict[str, Any] | None:
    """``kl_of_samples`` of a saved System with one adapter (its reference: the adapter off); None otherwise."""
    if len(policy.adapters) != 1:
        return None
    import torch

    from tailorlm.models.adapters import apply_adapters
    from tailorlm.models.load import load_model

    loaded = apply_adapters(load_model(policy.model, device="cpu", dtype=torch.float32), policy.adapters)
    return kl_of_samples(
        loaded.model, loaded.tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size
    )


def win_rate(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Share of items where score ``a`` beats ``b`` (ties count ½), with its bootstrap 95% CI."""
    from tailorlm.eval.stats import bootstrap_ci

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    wins = np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))
    ci = bootstrap_ci(wins, seed=seed)
    return {"win_rate": ci["mean"], "ci_low": ci["low"], "ci_high": ci["high"]}


def compare_with_reward(
    policy: System,
    start: System,
    prompts: Sequence[Messages],
    score: Callable[[Sequence[Sequence[Mapping[str, str]]], Sequence[str]], list[float]],
    *,
    max_new_tokens: int = 128,
    kl: bool = True,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Win rate of ``policy`` over ``start`` by ``score`` (a reward model's) with a CI, mean rewards, and the KL."""
    params = GenerationParams(max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    ours = _answers(policy, prompts, params, on_progress)
    theirs = _answers(start, prompts, params, on_progress)
    r_ours, r_theirs = np.asarray(score(prompts, ours)), np.asarray(score(prompts, theirs))
    report: dict[str, Any] = {
        "prompts": len(prompts),
        **win_rate(r_ours, r_theirs, seed=seed),
        "identical_answers": int(sum(a == b for a, b in zip(ours, theirs, strict=True))),
        "reward_policy": float(r_ours.mean()),
        "reward_start": float(r_theirs.mean()),
        "answer_chars_policy": float(np.mean([len(a) for a in ours])),
        "answer_chars_start": float(np.mean([len(a) for a in theirs])),
        "examples": [
            {"prompt": p[-1]["content"], "policy": a, "start": b, "reward_policy": float(x), "reward_start": float(y)}
            for p, a, b, x, y in list(zip(prompts, ours, theirs, r_ours, r_theirs, strict=True))[:5]
        ],
    }
    if kl and policy.model == start.model and not start.adapters:
        report["kl"] = sampled_kl(policy, prompts, max_new_tokens=max_new_tokens, seed=seed)
    report["seconds"] = time.perf_counter() - t0
    return report
