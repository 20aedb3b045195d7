"""The answer-only loss as plain PyTorch: backbone → LM head on the target positions only → cross-entropy.

TRL 1.16 computes the same loss with a fused, tiled LM head (``add_fused_lm_head``) that also derives entropy and
token accuracy. On a CPU that kernel is slow: profiling a LoRA step of the default model put 50% of the step in its
forward and backward (large ``addmm_``/``sub``/``exp`` over vocabulary tiles), against ~5% for this version. The
values are the same (a test compares both); only the speed differs.

The plain path needs to call the decoder and the head directly, so it is used only where that is equivalent to the
model's own forward: one process (DDP hooks live on the wrapper's ``forward``) and no virtual tokens (prompt
learning prepends them inside ``PeftModel.forward``). Elsewhere TRL's loss runs unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Inputs the decoder takes; TRL's collator may add others (e.g. for padding-free batches) that only its path handles.
_DECODER_INPUTS = ("input_ids", "attention_mask", "position_ids")


def answer_loss(causal_lm: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
    """Mean next-token loss over the positions whose label is not -100 (TRL's normalisation).

    ``num_items_in_batch`` is the target count of the whole accumulated batch (the Trainer's, for exact gradient
    accumulation); without it the loss is the mean over this micro-batch.
    """
    decoder_inputs = {k: inputs[k] for k in _DECODER_INPUTS if k in inputs}
    mask_in = decoder_inputs.get("attention_mask")
    if (
        mask_in is not None
        and "position_ids" not in decoder_inputs
        and bool((mask_in[:, 1:] <= mask_in[:, :-1]).all())
    ):
        # Right padding only: under causal attention no real token can see a pad (pads all come after it), and
        # positions count from 0 either way, so the mask changes nothing for the positions that are scored.
        # Without it SDPA takes its causal kernel, which skips the masked half of the attention matrix.
        del decoder_inputs["attention_mask"]
    hidden = causal_lm.get_decoder()(**decoder_inputs, use_cache=False).last_hidden_state
    targets = inputs["labels"][:, 1:]
    mask = targets != -100
    # Only the target positions go through the vocabulary projection: answers are a few tokens of each row.
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][mask])
    total = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
    count = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


def sft_trainer_class() -> type:
    """TRL's ``SFTTrainer`` with ``answer_loss`` where it is equivalent (see the module docstring)."""
    from trl import SFTTrainer

    class TailorSFTTrainer(SFTTrainer):
        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            causal_lm = _plain_causal_lm(model, self.args)
            if causal_lm is None or return_outputs or not set(inputs) <= {*_DECODER_INPUTS, "labels"}:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # accelerate applies mixed precision by wrapping the model's forward, which this path does not call.
            with self.accelerator.autocast():
                return answer_loss(causal_lm, inputs, num_items_in_batch)

    return TailorSFTTrainer


def _plain_causal_lm(model: Any, args: Any) -> Any | None:
    """The causal LM whose decoder and head can be called directly, or None where only TRL's path is right."""
    import peft

    if args.world_size > 1 or torch.cuda.is_available():
        return None  # DDP needs its wrapper's forward; on GPUs TRL's fused head is the fast one
    if isinstance(model, peft.PeftModel):
        if model.active_peft_config.is_prompt_learning:
            return None
        model = model.get_base_model()
    has_parts = callable(getattr(model, "get_decoder", None)) and model.get_output_embeddings() is not None
    return model if has_parts else None
