"""Continued pretraining, top to bottom: documents → split by document → tokens + EOS → packed blocks →
model (+ PEFT config or frozen parameters) → held-out perplexity → TRL SFTTrainer → perplexity again → System.

    recipe = load_config(PretrainRecipe, "recipes/pretrain-lora.yaml", ["data.path=corpus/"])
    with Run.create("pretrain", config=recipe, seed=recipe.training.seed, kind="pretrain") as run:
        system = fit(recipe, run)

The trainer is SFT's (``trainer_arguments``, ``train_and_save``: checkpoints, exact resume, metrics.json, the
saved System, the forgetting canaries); what is ours is the data and the perplexity. The blocks are packed here
rather than by TRL so that the held-out blocks, and with them the perplexity before and after, are one fixed set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tailorlm.core.run import Run
from tailorlm.core.system import PromptSpec, System
from tailorlm.errors import ConfigError
from tailorlm.rag.types import content_hash
from tailorlm.train.pretrain.config import PretrainRecipe, TextSource
from tailorlm.train.pretrain.data import (
    PackedCollator,
    pack_blocks,
    read_documents,
    split_documents,
    tokenize_documents,
)
from tailorlm.train.pretrain.perplexity import heldout_perplexity
from tailorlm.train.sft.answer_loss import sft_trainer_class
from tailorlm.train.sft.recipe import freeze_parameters, memory_plan, peft_config, train_and_save, trainer_arguments

log = logging.getLogger("tailorlm.train.pretrain")


def _record(run: Run, name: str, source: TextSource, docs: Sequence[Any]) -> None:
    # The fingerprint covers every document's text, so a changed file shows up as different data in run.json.
    run.record_dataset(name, source.path, content_hash("\n".join(d.hash for d in docs)), len(docs))


def build_trainer(
    recipe: PretrainRecipe, run: Run, callbacks: Sequence[Any] = ()
) -> tuple[Any, System | None, str, PromptSpec | None, Any]:
    """Everything up to ``trainer.train()``: (trainer, base System, model spec, prompt, held-out blocks or None)."""
    import torch
    from transformers import PrinterCallback, set_seed

    from tailorlm.models.load import load_model

    t, strategy = recipe.training, recipe.strategy
    if strategy.method == "qlora":
        raise ConfigError("qlora is not supported by pretrain yet", hint="use lora (or full) on this machine")
    base = System.load(recipe.system) if recipe.system else None
    if base is not None and base.adapters:
        raise ConfigError("training on top of a System with adapters is not supported yet", hint="merge it first")
    model_spec = base.model if base else recipe.model

    # data: documents, split by document (never by block)
    docs = read_documents(recipe.data)
    if recipe.eval_data is not None:
        train_docs, held_docs = docs, read_documents(recipe.eval_data)
    else:
        train_docs, held_docs = split_documents(docs, recipe.eval_fraction, seed=t.seed)
    _record(run, "train", recipe.data, train_docs)
    if held_docs:
        _record(run, "eval", recipe.eval_data or recipe.data, held_docs)

    # model: the seed first, because PEFT initialises the adapter inside SFTTrainer's constructor.
    set_seed(t.seed)
    loaded = load_model(model_spec, device="cpu", dtype=torch.float32)
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token_id is None:  # only padding the last short block of a batch; never a target
        tokenizer.pad_token = tokenizer.eos_token
    train_blocks = pack_blocks(tokenize_documents(train_docs, tokenizer), t.max_length)
    held_blocks = pack_blocks(tokenize_documents(held_docs, tokenizer), t.max_length) if held_docs else None
    log.info(
        "%d training documents → %d blocks of ≤ %d tokens; %d held out → %d blocks",
        len(train_docs),
        len(train_blocks),
        t.max_length,
        len(held_docs),
        len(held_blocks) if held_blocks is not None else 0,
    )
    if strategy.method == "freeze":
        trained = freeze_parameters(loaded.model, strategy)
        log.info("freeze: training %d parameter tensors", len(trained))

    evaluating = held_blocks is not None
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad) if strategy.method in (
        "full", "freeze") else 0  # fmt: skip
    args, extra = trainer_arguments(
        recipe,
        run,
        evaluating=evaluating,
        callbacks=callbacks,
        memory=memory_plan(run, t, loaded.model, longest=t.max_length, trainable=trainable),
        packing=False,  # packed above, with the document boundaries in seq_lengths
        # The rows are already input_ids + seq_lengths; TRL's preparation would only re-derive labels that
        # PackedCollator builds per batch.
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,  # the collator needs seq_lengths
        # The reported perplexity is of the final weights: picking the checkpoint with the best loss on the very
        # documents the perplexity is measured on would flatter it. eval_loss stays as a curve (and early stopping).
        load_best_model_at_end=False,
    )
    # The plain next-token loss (sft/answer_loss.py): TRL's fused LM head is slow on CPUs; on GPUs it is used.
    trainer = sft_trainer_class()(
        model=loaded.model,
        args=args,
        data_collator=PackedCollator(tokenizer.pad_token_id),
        train_dataset=train_blocks,
        eval_dataset=held_blocks,
        processing_class=tokenizer,
        peft_config=peft_config(strategy, loaded.model),
        callbacks=extra,
    )
    # disable_tqdm adds a PrinterCallback that prints every log dict; our run log and the CLI show them instead.
    trainer.remove_callback(PrinterCallback)
    return trainer, base, model_spec, base.prompt if base else None, held_blocks


def fit(recipe: PretrainRecipe, run: Run, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> System:
    """Continue pretraining per ``recipe`` inside ``run``; returns the saved System (adapter or full model).

    ``metrics.json`` gets ``perplexity: {before, after, tokens, blocks}`` on the held-out documents, computed by
    the same function on the same blocks for the starting and the trained weights, next to SFT's metrics
    (losses, tokens/s, canaries). ``resume`` continues from the latest complete checkpoint, exactly.
    """
    trainer, base, model_spec, prompt, held_blocks = build_trainer(recipe, run, callbacks)
    pad, batch = trainer.processing_class.pad_token_id, recipe.training.batch_size
    evaluate = None
    if held_blocks is not None:
        # Before = the starting weights. A fresh adapter is the identity (LoRA's B is zero, IA3's scales are one),
        # so the wrapped model scores exactly as the base; eval mode turns dropout off.
        before = heldout_perplexity(trainer.model, held_blocks, pad, batch)
        run.logger.info("held-out perplexity before: %.3f (%d tokens)", before["perplexity"], before["tokens"])

        def evaluate(trained: Any) -> dict[str, Any]:
            after = heldout_perplexity(trained.model, held_blocks, pad, batch)
            run.logger.info("held-out perplexity after: %.3f", after["perplexity"])
            return {
                # The exact token-weighted loss on the held-out blocks (the Trainer's eval_loss averages batches).
                "eval_loss": after["nll_per_token"],
                "perplexity": {
                    "before": before["perplexity"],
                    "after": after["perplexity"],
                    "nll_per_token_before": before["nll_per_token"],
                    "nll_per_token_after": after["nll_per_token"],
                    "tokens": after["tokens"],
                    "blocks": after["blocks"],
                },
            }

    return train_and_save(
        recipe, run, trainer, base=base, model_spec=model_spec, prompt=prompt, resume=resume, evaluate=evaluate
    )
