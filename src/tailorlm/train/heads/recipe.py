"""A classification or regression head, top to bottom: data → labels → model (+ PEFT SEQ_CLS config or frozen
parameters) → transformers Trainer → held-out evaluation and temperature scaling → System.

    recipe = load_config(HeadRecipe, "recipes/classify-sst2-lora.yaml", ["training.max_steps=10"])
    with Run.create("classify", config=recipe, seed=recipe.training.seed, kind="classify") as run:
        system = fit(recipe, run)

The backbone is read as ``AutoModelForSequenceClassification``: for a decoder, the hidden state of the last real
token goes through a new linear ``score`` layer (hidden → classes, or → 1 for regression). PEFT methods use
``task_type="SEQ_CLS"``, which keeps ``score`` out of the adapter targets and trains and saves it whole
(``modules_to_save``); full trains everything; freeze trains the top N blocks plus ``score``.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tailorlm.core.io import atomic_directory
from tailorlm.core.run import Run
from tailorlm.core.system import AdapterSpec, HeadSpec, System
from tailorlm.models.device import training_bf16
from tailorlm.train.heads.calibration import calibration_report, fit_temperature
from tailorlm.train.heads.config import HeadRecipe
from tailorlm.train.heads.data import Examples, infer_labels, label_ids, load_examples
from tailorlm.train.sft.config import LORA_FAMILY, Strategy

log = logging.getLogger("tailorlm.train.heads")

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
# The classification layer's attribute on transformers' *ForSequenceClassification models (decoders use `score`).
HEAD_MODULES = ("score", "classifier")


# --- parameter strategies -----------------------------------------------------------------------------------


def head_peft_config(strategy: Strategy, model: Any = None) -> Any:
    """The PEFT config (task_type SEQ_CLS) for a PEFT method; None for full and freeze."""
    import peft

    m = strategy.method
    if m in LORA_FAMILY:
        from tailorlm.train.sft.recipe import top_blocks_targets

        return peft.LoraConfig(
            r=strategy.r,
            lora_alpha=strategy.alpha,
            lora_dropout=strategy.dropout,
            use_dora=m == "dora",
            use_rslora=m == "rslora",
            task_type="SEQ_CLS",  # adds the head to modules_to_save and keeps it out of "all-linear"
            **top_blocks_targets(model, strategy),
        )
    if m == "ia3":
        targets = None if strategy.target_modules == "all-linear" else strategy.target_modules
        return peft.IA3Config(target_modules=targets, task_type="SEQ_CLS")
    return None


def head_parameter_names(model: Any) -> list[str]:
    """Dotted names of the classification layer's parameters (``score.weight`` for decoders)."""
    return [
        f"{name}.{p}"
        for name in HEAD_MODULES
        if hasattr(model, name)
        for p, _ in getattr(model, name).named_parameters()
    ]


def apply_strategy(model: Any, strategy: Strategy) -> Any:
    """Wrap in a PEFT model, or freeze all but the top blocks (the new head always trains); full trains all."""
    if (cfg := head_peft_config(strategy, model)) is not None:
        from peft import get_peft_model

        return get_peft_model(model, cfg)
    if strategy.method == "freeze":
        from tailorlm.train.sft.recipe import freeze_parameters

        trained = set(freeze_parameters(model, strategy)) | set(head_parameter_names(model))
        for name, param in model.named_parameters():
            param.requires_grad_(name in trained)  # a randomly initialised head left frozen would learn nothing
        log.info("freeze: training %d parameter tensors", len(trained))
    return model


# --- data ---------------------------------------------------------------------------------------------------


def _datasets(
    recipe: HeadRecipe, run: Run
) -> tuple[Examples, Examples | None, list[str] | None, list[Any], list[Any] | None]:
    """Train and held-out examples, the class names, and the targets as the model wants them (ids or floats)."""
    seed = recipe.training.seed
    train = load_examples(recipe.data, recipe.problem, "data", seed)
    run.record_dataset("train", recipe.data.path, train.fingerprint, len(train))
    held_out: Examples | None = None
    if recipe.eval_data is not None:
        held_out = load_examples(recipe.eval_data, recipe.problem, "eval_data", seed)
        run.record_dataset("eval", recipe.eval_data.path, held_out.fingerprint, len(held_out))
    elif recipe.eval_fraction > 0 and len(train) >= 10:
        train, held_out = train.split(recipe.eval_fraction, seed)
    elif recipe.eval_fraction > 0:
        log.warning("only %d records: no eval split (needs at least 10)", len(train))
    if recipe.problem == "regression":
        return train, held_out, None, list(train.targets), list(held_out.targets) if held_out else None
    labels = recipe.labels or infer_labels(train.targets)
    y_eval = label_ids(held_out, labels, "eval") if held_out else None
    return train, held_out, labels, label_ids(train, labels, "training"), y_eval


def _tokenized(tokenizer: Any, texts: list[str], targets: list[Any], max_length: int) -> Any:
    import datasets

    ds = datasets.Dataset.from_dict({"text": texts, "labels": targets})
    return ds.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"]
    )


def _run_callback(run: Run) -> Any:
    from transformers import TrainerCallback

    class RunMetrics(TrainerCallback):
        """Every Trainer log line (loss, lr, grad norm, eval loss) goes to the run's metrics.jsonl."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if numbers:
                run.log_metrics(numbers, step=state.global_step)

    return RunMetrics()


# --- the recipe ---------------------------------------------------------------------------------------------


def build_trainer(recipe: HeadRecipe, run: Run, callbacks: Sequence[Any] = ()) -> tuple[Any, HeadSpec, Any]:
    """Everything up to ``trainer.train()``: returns (trainer, the head, the tokenized held-out set or None)."""
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments, set_seed

    from tailorlm.models.engines.head import head_tokenizer, load_head_model
    from tailorlm.models.load import resolve_model_path

    t = recipe.training
    train, held_out, labels, y_train, y_eval = _datasets(recipe, run)
    head = HeadSpec(problem=recipe.problem, labels=labels, max_length=t.max_length)

    # The seed first: it initialises the score layer and the adapters.
    set_seed(t.seed)
    path = resolve_model_path(recipe.model)
    tokenizer = head_tokenizer(path)
    model = apply_strategy(load_head_model(path, head, tokenizer, torch.float32), recipe.strategy)
    train_ds = _tokenized(tokenizer, train.texts, y_train, t.max_length)
    eval_ds = _tokenized(tokenizer, held_out.texts, y_eval, t.max_length) if held_out is not None else None

    periodic_eval = eval_ds is not None and t.eval_steps is not None
    bf16 = training_bf16(t.precision)
    args = TrainingArguments(
        output_dir=str(run.path / "checkpoints"),
        learning_rate=recipe.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio (warmup_ratio is gone)
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        use_cpu=bf16 and not torch.cuda.is_available(),  # transformers refuses CPU bf16 without it
        # Rows of similar length share a batch: far less padding, the main cost of short texts on a CPU.
        train_sampling_strategy="group_by_length",
        logging_steps=1,
        eval_strategy="steps" if periodic_eval else "no",
        eval_steps=t.eval_steps if periodic_eval else None,
        save_strategy="no",  # the head or adapter is saved once, at the end, into the run's artifacts
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[_run_callback(run), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm prints every log dict; the run log and CLI show them
    return trainer, head, eval_ds


def evaluate_head(
    logits: np.ndarray, targets: np.ndarray, head: HeadSpec, *, calibrate: bool
) -> tuple[dict[str, Any], float]:
    """Held-out metrics with a bootstrap CI, and the fitted temperature (1.0 for regression or no calibration)."""
    from tailorlm.eval.stats import bootstrap_ci

    if head.problem == "regression":
        pred = logits.reshape(-1)
        err = pred - targets
        ci = bootstrap_ci(err**2)
        pearson = float(np.corrcoef(pred, targets)[0, 1]) if len(pred) > 1 and pred.std() > 0 else None
        report = {"n": len(pred), "mse": ci["mean"], "mse_low": ci["low"], "mse_high": ci["high"]}
        return {**report, "mae": float(np.abs(err).mean()), "pearson": pearson}, 1.0
    y = targets.astype(np.int64)
    ci = bootstrap_ci((logits.argmax(axis=1) == y).astype(float))
    temperature = fit_temperature(logits, y) if calibrate else 1.0
    report = {"n": len(y), "accuracy": ci["mean"], "accuracy_low": ci["low"], "accuracy_high": ci["high"]}
    return {**report, **calibration_report(logits, y, temperature)}, temperature


def fit(recipe: HeadRecipe, run: Run, *, callbacks: Sequence[Any] = ()) -> System:
    """Train per ``recipe`` inside ``run``; save the adapter (or model) and ``system.yaml`` under ``run.artifacts``."""
    trainer, head, eval_ds = build_trainer(recipe, run, callbacks)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    tokens = trainer.state.num_input_tokens_seen
    metrics: dict[str, Any] = {
        "problem": recipe.problem,
        "method": recipe.strategy.method,
        "learning_rate": recipe.learning_rate,
        "labels": head.labels,
        "train_examples": len(trainer.train_dataset),
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "train_seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        # ru_maxrss is in KiB on Linux: the process's peak resident memory, model + optimizer + activations.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if eval_ds is not None:
        out = trainer.predict(eval_ds)
        logits = np.asarray(out.predictions, dtype=np.float64).reshape(len(eval_ds), -1)
        metrics["eval"], temperature = evaluate_head(
            logits, np.asarray(out.label_ids), head, calibrate=recipe.calibrate
        )
        head = head.model_copy(update={"temperature": temperature})
    elif recipe.calibrate and recipe.problem == "classification":
        log.warning("no held-out data: temperature scaling skipped (T = 1)")
    run.write_metrics(metrics)

    # Weights go into a temporary folder renamed into place when whole, and system.yaml (atomic) comes last: a killed
    # save never leaves a torn adapter_model.safetensors under the real name.
    if head_peft_config(recipe.strategy) is not None:
        out_dir = run.artifacts / ADAPTER_DIR
        with atomic_directory(out_dir) as tmp:
            trainer.model.save_pretrained(tmp)  # the adapter plus the trained score layer (modules_to_save)
        system = System(model=recipe.model, adapters=[AdapterSpec(path=str(out_dir), name=recipe.name)])
    else:
        out_dir = run.artifacts / MODEL_DIR
        with atomic_directory(out_dir) as tmp:
            trainer.save_model(str(tmp))
            trainer.processing_class.save_pretrained(tmp)
        system = System(model=str(out_dir))
    system = system.model_copy(
        update={"name": recipe.name, "head": head, "parent": recipe.model, "created_by": run.id}
    )
    system.save(run.artifacts)
    run.logger.info("saved %s and system.yaml in %s", out_dir.name, run.artifacts)
    return system
