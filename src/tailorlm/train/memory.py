"""Fit a training run into the memory a machine has: pick the micro-batch and activation checkpointing.

Peak memory of decoder training is mostly activations: every layer keeps its inputs, its MLP's intermediate and the
adapters' inputs for the backward pass, per token. On the default 135M model that is about 3.5 MB per token in fp32
(measured: 4 rows of 600 tokens peaked at 9.7 GB, 1 row at 3.3 GB), so the RAFT rung's 600-token rows at batch 4
need ~10 GB, which a laptop with 8 or 16 GB does not have. Two levers keep the effective batch, and so the
training, the same:

1. **A smaller micro-batch** with more gradient-accumulation steps. Activations shrink in proportion. On a CPU this
   costs nothing while a pass still holds about a thousand tokens: on an AVX2 EPYC (2 threads), 600-token rows train
   at 14.6 s per step as 4 rows × 1 pass (10.2 GB), 14.7 s as 2 × 2 (5.9 GB) and 16.5 s as 1 × 4 (3.4 GB); 266-token
   rows at 6.1, 6.6 and 7.7 s. The gradient is the same sum over the same answer tokens (the loss is normalised by
   the accumulated batch's token count, ``num_items_in_batch``), and the data order is the same (transformers'
   length grouping uses the effective batch).
2. **Activation checkpointing**: keep only each layer's input and recompute the rest in the backward pass, about
   30-45% more compute (single-threaded, 42.3 s of CPU per step against 29.4 s, at 4.3 GB instead of 9.7 GB). Only
   when a single row at a time still does not fit.

``plan_memory`` makes that choice from an estimate, before the model runs, and says why in words for the log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psutil

MB = 1024 * 1024
# fp32 floats kept per token per decoder layer for the backward pass, as multiples of the hidden and intermediate
# widths (norm inputs and outputs, q/k/v/o and rotary copies, residuals, the MLP's gate/up/act, the adapters'
# inputs). Fitted to measured peaks of the default model (hidden 576, intermediate 1536, 30 layers; LoRA r=16 on
# every linear layer) at 1, 2 and 4 rows of 600 tokens: 3.3, 6.1 and 9.7-10.0 GB, about 2.1 GB per row.
HIDDEN_FLOATS = 32
INTERMEDIATE_FLOATS = 8
# Everything besides weights and activations: the interpreter, torch and tokenizer libraries, allocator slack.
BASE_MB = 1200.0
# On a CPU a pass of about this many tokens keeps the matmuls (and both threads) efficient; more only costs memory.
CPU_MICRO_TOKENS = 1024
# Without a limit from the user, a training may plan on this share of the memory available when it starts.
AVAILABLE_SHARE = 0.7


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int  # rows per forward pass
    grad_accum: int  # forward passes per optimizer step (the recipe's own grad_accum times the split)
    checkpointing: bool
    estimate_mb: float  # the planned peak
    budget_mb: float
    longest: int  # tokens in the longest row, which sets the peak
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def activation_mb_per_token(config: Any, *, checkpointing: bool, dtype_bytes: int = 4) -> float:
    """Activation memory per token of a decoder ``config`` (a transformers PretrainedConfig) in training.

    With checkpointing only each layer's input is kept, plus one layer's full activations while it is recomputed.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(text.hidden_size)
    inter = int(getattr(text, "intermediate_size", None) or 4 * hidden)
    layers = int(text.num_hidden_layers)
    per_layer = HIDDEN_FLOATS * hidden + INTERMEDIATE_FLOATS * inter
    floats = (2 * hidden * layers + per_layer) if checkpointing else per_layer * layers
    return floats * dtype_bytes / MB


def weights_mb(n_params: int, *, weight_bytes: int, trainable: int) -> float:
    """Frozen weights, plus trained parameters with their fp32 gradient and AdamW's two moments."""
    return (n_params * weight_bytes + trainable * 4 * 3) / MB


def estimate_mb(config: Any, n_params: int, trainable: int, rows: int, longest: int, *, checkpointing: bool,
                weight_bytes: int = 4, resident_mb: float = 0.0) -> float:  # fmt: skip
    """Peak MB: what the process holds (at least the libraries and the weights; ``resident_mb`` when it already
    holds more, e.g. a ladder's index), plus the trained parameters' state and the activations."""
    act = activation_mb_per_token(config, checkpointing=checkpointing) * rows * longest
    held = max(BASE_MB + weights_mb(n_params, weight_bytes=weight_bytes, trainable=0), resident_mb)
    return held + weights_mb(0, weight_bytes=weight_bytes, trainable=trainable) + act


def default_budget_mb() -> float:
    return AVAILABLE_SHARE * psutil.virtual_memory().available / MB


def _divisors(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def plan_memory(
    config: Any,
    *,
    n_params: int,
    trainable: int,
    batch_size: int,
    grad_accum: int,
    longest: int,
    checkpointing: bool | None = None,
    micro_batch: int | None = None,
    budget_mb: float | None = None,
    on_cpu: bool = True,
    weight_bytes: int = 4,
    resident_mb: float = 0.0,
) -> MemoryPlan:
    """The micro-batch (a divisor of ``batch_size``) and checkpointing that fit ``budget_mb``.

    ``checkpointing`` / ``micro_batch`` set by the user are kept as given (None: choose). ``budget_mb`` None: 70% of
    the memory available now. ``resident_mb``: what the process holds already, model loaded (psutil's RSS). The
    effective batch, ``batch_size * grad_accum``, never changes.
    """
    budget = float(budget_mb) if budget_mb is not None else default_budget_mb()

    def est(rows: int, ckpt: bool) -> float:
        return estimate_mb(config, n_params, trainable, rows, longest, checkpointing=ckpt, weight_bytes=weight_bytes,
                           resident_mb=resident_mb)  # fmt: skip

    if micro_batch is not None:
        if batch_size % micro_batch:
            from tailorlm.errors import ConfigError

            raise ConfigError(f"training.micro_batch_size={micro_batch} must divide training.batch_size={batch_size}")
        candidates = [micro_batch]
    else:
        candidates = _divisors(batch_size)
    why: list[str] = []
    micro = candidates[0]
    if micro_batch is None and on_cpu:
        # Free on a CPU (see the module docstring): the fewest rows per pass that still hold CPU_MICRO_TOKENS tokens.
        enough = [d for d in candidates if d * longest >= CPU_MICRO_TOKENS]
        fast = enough[-1] if enough else candidates[0]
        if fast < micro:
            why.append(f"{fast} row(s) of up to {longest} tokens per pass keep a CPU's matmuls as fast as {micro} "
                       "and need less memory")  # fmt: skip
            micro = fast
    ckpt = bool(checkpointing)
    if est(micro, ckpt) > budget and micro_batch is None:
        fitting = [d for d in candidates if d <= micro and est(d, ckpt) <= budget]
        smaller = fitting[0] if fitting else candidates[-1]
        if smaller < micro:
            why.append(f"{micro} rows would need ~{est(micro, ckpt) / 1024:.1f} GB against a budget of "
                       f"{budget / 1024:.1f} GB")  # fmt: skip
            micro = smaller
    if est(micro, ckpt) > budget and checkpointing is None:
        why.append(f"even {micro} row(s) per pass would need ~{est(micro, False) / 1024:.1f} GB against "
                   f"{budget / 1024:.1f} GB: activation checkpointing on (about 30% more compute)")  # fmt: skip
        ckpt = True
    peak = est(micro, ckpt)
    if peak > budget:
        why.append(f"the estimate, {peak / 1024:.1f} GB, still exceeds the budget of {budget / 1024:.1f} GB: "
                   "lower training.max_length or use a smaller model")  # fmt: skip
    split = batch_size // micro
    head = (f"micro-batch {micro} × {grad_accum * split} accumulation step(s) (effective batch "
            f"{batch_size * grad_accum}), activation checkpointing {'on' if ckpt else 'off'}, "
            f"estimated peak {peak / 1024:.1f} GB of a {budget / 1024:.1f} GB budget")  # fmt: skip
    reason = head + (": " + "; ".join(why) if why else "")
    return MemoryPlan(micro, grad_accum * split, ckpt, round(peak, 0), round(budget, 0), longest, reason)
