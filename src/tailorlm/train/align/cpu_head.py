"""A plain-PyTorch stand-in for TRL's fused LM head on CPUs: the same per-token outputs, several times less work.

TRL 1.16's preference and RL trainers (DPO, KTO, GRPO) get per-token log-probabilities from ``add_fused_lm_head``:
a tiled, custom-autograd projection through the LM head. Off Triton devices it scores *every* position of the
batch, prompt and padding included (``compact`` is False there), and recomputes each vocabulary tile in the
backward pass. On a CPU that is most of a DPO step: a pair's prompt is usually several times longer than its
answers, and SmolLM2's vocabulary has 49,152 entries.

``plain_lm_head`` installs the same ``model(..., labels=labels, fused_lm_head=True)`` interface, but projects only
the positions whose label is not -100 with ``lm_head`` and ``log_softmax`` (autograd does the backward), and fills
the same ``FusedCausalLMOutput`` fields (log-probs, entropy, mean logits, top-1, log Σp²). A test checks every field
and the gradients against TRL's kernel. It stands in only where it computes the same thing: temperature 1, no
logit soft-capping or scaling, no MoE router loss; anywhere else TRL's own head is installed.

    with cpu_lm_head():          # while the trainer is built (TRL patches the model in its constructor)
        trainer = DPOTrainer(...)
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from typing import Any

import torch

# The TRL modules that import add_fused_lm_head by name, and so must see the stand-in while a trainer is built.
_TRAINER_MODULES = (
    "trl.trainer.dpo_trainer",
    "trl.trainer.kto_trainer",
    "trl.trainer.grpo_trainer",
    "trl.trainer.rloo_trainer",
)


def _supported(model: Any, temperature: float, cast_lm_head_to_fp32: bool) -> bool:
    cfg = model.config.get_text_config()
    scaled = any(
        getattr(cfg, name, None) not in (None, 1.0)
        for name in (
            "final_logit_softcapping",
            "logit_scale",
            "output_multiplier",
            "lm_head_multiplier",
            "logits_scaling",
        )
    )
    return (
        temperature == 1.0
        and not cast_lm_head_to_fp32
        and not scaled
        and not getattr(cfg, "output_router_logits", False)
    )


def plain_lm_head(
    model: Any,
    temperature: float = 1.0,
    cast_lm_head_to_fp32: bool = False,
    outputs: tuple[str, ...] = ("log_probs",),
    *,
    fallback: Any = None,
) -> None:
    """``add_fused_lm_head``'s signature and outputs, computed on the labelled positions only (see the module doc).

    ``fallback`` is TRL's own function, used where the plain head would not compute the same thing.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    if not _supported(model, temperature, cast_lm_head_to_fp32):
        if fallback is None:
            from trl.trainer.utils import add_fused_lm_head as fallback
        fallback(model, temperature=temperature, cast_lm_head_to_fp32=cast_lm_head_to_fp32, outputs=outputs)
        return
    original_forward = model.forward
    want_sq = "log_sum_sq_probs" in outputs

    @functools.wraps(type(model).forward)
    def _forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                 num_items_in_batch: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        if not fused_lm_head:
            extra = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
            return original_forward(*args, **kwargs, **{k: v for k, v in extra.items() if v is not None})
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        targets = labels[mask]
        logits = self.get_output_embeddings()(hidden[mask])  # (n labelled positions, vocabulary)
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, targets[:, None])[:, 0]
        # masked_scatter keeps the result connected to the model even when no position is labelled (as TRL does).
        log_probs = picked.new_zeros(mask.shape).masked_scatter(mask, picked)
        with torch.no_grad():
            probs = logp.exp()
            fields = {
                "entropy": -(probs * logp).sum(-1),
                "mean_logits": logits.float().mean(-1),
                "is_top1": logits.argmax(-1) == targets,
                "log_sum_sq_probs": torch.logsumexp(2 * logp, dim=-1) if want_sq else None,
            }
        per_token = {
            name: None if value is None else value.new_zeros(mask.shape).masked_scatter(mask, value)
            for name, value in fields.items()
        }
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, label_mask=mask, aux_loss=None, **per_token)

    model.forward = types.MethodType(_forward, model)


@contextlib.contextmanager
def cpu_lm_head(enabled: bool | None = None) -> Iterator[None]:
    """While the block runs, TRL's trainers install ``plain_lm_head`` instead of their fused head (on CPUs only,
    unless ``enabled`` says otherwise)."""
    import importlib

    if enabled is None:
        enabled = not torch.cuda.is_available()
    if not enabled:
        yield
        return
    modules = [importlib.import_module(name) for name in _TRAINER_MODULES]
    saved = [m.add_fused_lm_head for m in modules]
    for module, original in zip(modules, saved, strict=True):
        module.add_fused_lm_head = functools.partial(plain_lm_head, fallback=original)
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.add_fused_lm_head = original
