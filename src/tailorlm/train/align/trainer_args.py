"""The ``TrainingArguments`` fields every preference trainer shares (reward, DPO, KTO, ORPO, SimPO).

The TRL configs differ in their method fields only; checkpoints, logging, precision and the schedule are set the
same way as SFT's (``train/sft/recipe.py::trainer_arguments``), so a killed run resumes from ``run/checkpoints``.
"""

from __future__ import annotations

from typing import Any

from tailorlm.core.run import Run
from tailorlm.models.device import training_bf16
from tailorlm.train.sft.recipe import CHECKPOINT_DIR

# Checkpoints every N optimizer steps: an interrupted preference run loses at most this many steps.
SAVE_STEPS = 25


def shared_arguments(recipe: Any, run: Run, *, micro_batch: int, grad_accum: int) -> dict[str, Any]:
    """Fields for any TRL config built on ``TrainingArguments``; the caller adds its method's own."""
    import torch

    t = recipe.training
    return dict(
        output_dir=str(run.path / CHECKPOINT_DIR),
        learning_rate=recipe.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=micro_batch,
        per_device_eval_batch_size=micro_batch,
        gradient_accumulation_steps=grad_accum,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        max_length=t.max_length,
        bf16=training_bf16(t.precision),
        use_cpu=not torch.cuda.is_available(),
        # transformers 5's name; TRL's configs still default the old alias (gradient_checkpointing) to True, which
        # costs a third more compute: off unless the recipe asks for it.
        activation_checkpointing=bool(t.activation_checkpointing),
        gradient_checkpointing=bool(t.activation_checkpointing),
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",  # the ladder's plan prices a rung in tokens per second
        eval_strategy="no",  # held-out pairs are scored once at the end, pair by pair (reward.py, dpo.py)
        save_strategy="steps",
        save_steps=t.save_steps or SAVE_STEPS,
        save_total_limit=t.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
    )


def micro_batches(batch_size: int, micro_batch: int | None) -> tuple[int, int]:
    """(rows per forward pass, accumulation steps): the recipe's micro-batch when it divides the batch, else 4."""
    micro = micro_batch or min(batch_size, 4)  # two cores gain nothing from wider batches; memory stays small
    while batch_size % micro:
        micro -= 1
    return micro, batch_size // micro
