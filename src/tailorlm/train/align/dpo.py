"""Preference optimization without a reward model: DPO, IPO, SLiC's hinge, KTO, ORPO and SimPO through TRL.

    recipe = load_config(DpoRecipe, "recipes/dpo-lora.yaml", ["method=ipo", "training.max_steps=10"])
    with Run.create("dpo", config=recipe, seed=recipe.training.seed, kind="dpo") as run:
        system = fit_dpo(recipe, run)

The reference is never a second copy of the model:
- a new LoRA adapter on the base: the base with the adapter off (TRL's PEFT path);
- continuing a System's own adapter (an SFT rung's): that adapter, loaded once more as "ref" and frozen;
- and with ``precompute_ref`` (the default) the reference scores every pair once before training, so no
  training step runs it.
ORPO and SimPO need no reference at all.

After training, the held-out pairs are scored under the policy and the reference (``preference_eval``): how often
each ranks the chosen answer above the rejected one, the implicit-reward accuracy and margins of the trained policy,
all with CIs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.errors import ConfigError
from tailorlm.train.align.config import DpoRecipe
from tailorlm.train.align.data import fit_rows, limited, load_preferences, split_rows, to_rows
from tailorlm.train.align.trainer_args import micro_batches, shared_arguments
from tailorlm.train.sft.config import LORA_FAMILY
from tailorlm.train.sft.recipe import _run_callback, peft_config, train_and_save

log = logging.getLogger("tailorlm.train.align")

# TRL's loss_type per method (DPOConfig for the paired losses, CPOConfig for SimPO).
_DPO_LOSS = {"dpo": "sigmoid", "ipo": "ipo", "hinge": "hinge"}


def _policy(recipe: DpoRecipe) -> tuple[Any, Any, System | None, str, Any]:
    """(loaded model, tokenizer, base System, model spec, peft config or None when an adapter is continued)."""
    import torch
    from transformers import set_seed

    from tailorlm.models.load import load_model

    base = System.load(recipe.system) if recipe.system else None
    spec = base.model if base else recipe.model
    set_seed(recipe.training.seed)  # the new adapter is initialised in the trainer's constructor
    loaded = load_model(spec, device="cpu", dtype=torch.float32)
    if base is not None and base.adapters:
        from peft import PeftModel

        if len(base.adapters) > 1 or recipe.strategy.method not in LORA_FAMILY:
            raise ConfigError(
                "preference training continues one LoRA adapter of the starting System",
                hint="merge the System's adapters first (tailor merge), or start from its base model",
            )
        path = base.adapters[0].path
        # TRL loads a frozen copy of a continued adapter as "ref" itself: the reference is the starting System.
        model = PeftModel.from_pretrained(loaded.model, path, adapter_name="default", is_trainable=True)
        return model, loaded.tokenizer, base, spec, None
    if recipe.strategy.method == "freeze":
        from tailorlm.train.sft.recipe import freeze_parameters

        freeze_parameters(loaded.model, recipe.strategy)
    return loaded.model, loaded.tokenizer, base, spec, peft_config(recipe.strategy, loaded.model)


def _config(recipe: DpoRecipe, run: Run, micro: int, accum: int) -> Any:
    shared = shared_arguments(recipe, run, micro_batch=micro, grad_accum=accum)
    beta = recipe.beta_value
    if recipe.method in _DPO_LOSS:
        from trl import DPOConfig

        return DPOConfig(
            **shared,
            beta=beta,
            loss_type=[_DPO_LOSS[recipe.method]],
            label_smoothing=recipe.label_smoothing,
            precompute_ref_log_probs=recipe.precompute_ref,
            dataset_num_proc=None,
        )
    if recipe.method == "kto":
        from trl import KTOConfig

        return KTOConfig(
            **shared,
            beta=beta,
            desirable_weight=recipe.desirable_weight,
            undesirable_weight=recipe.undesirable_weight,
            precompute_ref_log_probs=recipe.precompute_ref,
            dataset_num_proc=None,
        )
    if recipe.method == "orpo":
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**shared, beta=beta, dataset_num_proc=None)
    from trl.experimental.cpo import CPOConfig

    # SimPO is CPO's trainer with the simpo loss and no SFT term (cpo_alpha=0); TRL's gamma is the margin itself.
    return CPOConfig(
        **shared,
        beta=beta,
        loss_type="simpo",
        cpo_alpha=0.0,
        simpo_gamma=recipe.gamma_beta_ratio * beta,
        dataset_num_proc=None,
    )


def _trainer_class(method: str) -> Any:
    if method in _DPO_LOSS:
        from trl import DPOTrainer

        return DPOTrainer
    if method == "kto":
        from trl import KTOTrainer

        return KTOTrainer
    if method == "orpo":
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer
    from trl.experimental.cpo import CPOTrainer

    return CPOTrainer


def build_dpo_trainer(
    recipe: DpoRecipe, run: Run, callbacks: Sequence[Any] = ()
) -> tuple[Any, System | None, str, list]:
    """Everything up to ``trainer.train()``: (trainer, base System, model spec, held-out rows)."""
    import datasets
    from transformers import PrinterCallback

    t = recipe.training
    kind = "binary" if recipe.method == "kto" else "preference"
    data = load_preferences(recipe.data, kind, seed=t.seed)
    run.record_dataset("pairs", recipe.data.path, data.fingerprint, len(data))
    held = load_preferences(recipe.eval_data, kind, seed=t.seed) if recipe.eval_data else None
    train, held = split_rows(data, held, recipe.eval_fraction, t.seed)
    train = limited(train, recipe.data.limit, t.seed)
    model, tokenizer, base, spec, peft_cfg = _policy(recipe)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows, fit = fit_rows(to_rows(train), tokenizer, t.max_length, "training")
    held_rows = fit_rows(to_rows(held), tokenizer, t.max_length, "held-out")[0] if held is not None else []
    run.log_metrics({"train_records": len(train_rows), "held_out_records": len(held_rows), **fit.as_dict()}, step=0)
    micro, accum = micro_batches(t.batch_size, t.micro_batch_size)
    kwargs: dict[str, Any] = dict(
        model=model,
        args=_config(recipe, run, micro, accum),
        train_dataset=datasets.Dataset.from_list(train_rows),
        processing_class=tokenizer,
        callbacks=[_run_callback(run), *callbacks],
    )
    if peft_cfg is not None:
        kwargs["peft_config"] = peft_cfg
    from tailorlm.train.align.cpu_head import cpu_lm_head

    with cpu_lm_head():  # on a CPU, TRL's fused LM head scores every position: ours only the answers'
        trainer = _trainer_class(recipe.method)(**kwargs)
    trainer.remove_callback(PrinterCallback)
    return trainer, base, spec, held_rows


def _evaluation_reference(trainer: Any, spec: str) -> Any:
    """The reference model for the held-out metrics, or None when it lives inside the policy (a LoRA adapter off,
    or the frozen "ref" copy of a continued adapter). Full and freeze training have it nowhere (TRL precomputes the
    reference's log-probs), so the starting weights are loaded once more, for this evaluation only."""
    if getattr(trainer, "ref_model", None) is not None:
        return trainer.ref_model
    if hasattr(trainer.model, "peft_config"):
        return None
    import torch

    from tailorlm.models.load import load_model

    device = next(trainer.model.parameters()).device
    return load_model(spec, device="cpu", dtype=torch.float32).model.to(device).eval()


def fit_dpo(recipe: DpoRecipe, run: Run, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> System:
    """Train per ``recipe`` inside ``run``; score the held-out pairs; save the adapter (or model) and system.yaml."""
    from tailorlm.train.align.preference_eval import preference_eval

    trainer, base, spec, held_rows = build_dpo_trainer(recipe, run, callbacks)
    start = time.perf_counter()

    def evaluate(tr: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"dpo_method": recipe.method, "beta": recipe.beta_value}
        if held_rows and recipe.method != "kto":
            reference = _evaluation_reference(tr, spec)
            out["held_out"] = preference_eval(
                tr.model, tr.processing_class, held_rows, beta=recipe.beta_value, reference=reference
            )
            del reference
        if held_rows and recipe.kl_samples and hasattr(tr.model, "peft_config"):
            from tailorlm.train.align.compare import kl_of_samples

            prompts = [r["prompt"] for r in held_rows[: recipe.kl_samples]]
            seed = recipe.training.seed
            out["kl"] = kl_of_samples(tr.model, tr.processing_class, prompts, max_new_tokens=64, seed=seed)
        if "ref" in getattr(tr.model, "peft_config", {}):
            tr.model.delete_adapter("ref")  # the frozen copy of the starting adapter is not part of the result
        return out

    # train_and_save is SFT's: resume from the latest checkpoint, metrics.json, the adapter, system.yaml, model card.
    system = train_and_save(
        recipe, run, trainer, base=base, model_spec=spec, prompt=base.prompt if base else None, resume=resume,
        evaluate=evaluate,
    )  # fmt: skip
    log.info("preference training took %.0f s", time.perf_counter() - start)
    return system
