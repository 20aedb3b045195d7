"""Supervised fine-tuning, top to bottom: data → model (+ PEFT config or frozen parameters) → TRL SFTTrainer → System.

    recipe = load_config(SFTRecipe, "recipes/sft-lora.yaml", ["training.max_steps=10"])
    with Run.create("sft", config=recipe, seed=recipe.training.seed, kind="sft") as run:
        system = fit(recipe, run)

Chat records become TRL's conversational *prompt-completion* rows: everything before the last assistant turn is
the prompt, the last assistant turn the completion. TRL tokenizes the prompt with ``add_generation_prompt=True``
(exactly what the hf engine renders at inference) and sets the prompt's labels to -100, so the loss falls on the
answer only. Text records train on every token (language modelling).
"""

from __future__ import annotations

import json
import logging
import re
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tailorlm.core.run import Run
from tailorlm.core.system import AdapterSpec, PromptSpec, System
from tailorlm.data import Dataset, load_dataset
from tailorlm.errors import ConfigError, DataError
from tailorlm.models.device import training_bf16
from tailorlm.train.memory import MemoryPlan, plan_memory
from tailorlm.train.model_card import write_model_card
from tailorlm.train.safety import complete_checkpoint, final_directory, guard_resources
from tailorlm.train.sft.answer_loss import sft_trainer_class
from tailorlm.train.sft.config import LORA_FAMILY, PEFT_METHODS, DataSpec, SFTRecipe, Strategy

log = logging.getLogger("tailorlm.train.sft")

CHECKPOINT_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Decoder blocks are numbered modules in a list: `model.layers.3.` (Llama, Qwen), `transformer.h.3.` (GPT-2).
_BLOCK = re.compile(r"\.(?:layers|h|blocks|block)\.(\d+)\.")


# --- data ---------------------------------------------------------------------------------------------------


def to_trl_rows(
    dataset: Dataset, prompt: PromptSpec | None = None, *, native_tools: bool = False
) -> list[dict[str, Any]]:
    """Canonical records → TRL rows: ``{"prompt": [...], "completion": [last assistant]}`` or ``{"text": ...}``.

    With a ``prompt`` program (training a System that has one), a single-turn chat's user turn is rendered
    through it, as ``render_messages`` does at inference, so training sees the prompt the System will send.

    A record with ``tools`` trains in the format the model will be asked in at inference (``tools/calling.py``): the
    chat template's own tool format when it has one (``native_tools``: TRL renders the row's ``tools``), else the
    documented fallback, where the tools sit in the system message and calls are ``<tool_call>`` blocks.
    """
    from tailorlm.prompting.program import render_messages

    if dataset.kind == "text":
        return [{"text": r.text} for r in dataset]
    if dataset.kind != "chat":
        raise DataError(f"SFT trains on chat, Alpaca or text records, not {dataset.kind}")
    rows = []
    for i, record in enumerate(dataset):
        if record.tools:
            rows.append(_tool_row(record, native_tools, f"{dataset.source or '<memory>'}: record {i + 1}"))
            continue
        messages = [{"role": m.role, "content": m.content or ""} for m in record.messages]
        last = max((j for j, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
        if last <= 0:
            raise DataError(f"{dataset.source or '<memory>'}: record {i + 1} has no turn before the assistant's")
        head = messages[:last]
        if prompt is not None and [m["role"] for m in head] == ["user"]:
            head = list(render_messages(prompt, head[0]["content"]))
        # Earlier assistant turns stay in the prompt: only the final answer is trained on.
        rows.append({"prompt": head, "completion": [messages[last]]})
    return rows


def _tool_row(record: Any, native: bool, where: str) -> dict[str, Any]:
    """A chat record with tools as a TRL row whose completion is the final assistant turn (its calls or answer)."""
    from tailorlm.tools.calling import fallback_messages

    full = [m.model_dump(exclude_none=True) for m in record.messages]
    last = max((j for j, m in enumerate(full) if m["role"] == "assistant"), default=-1)
    if last <= 0:
        raise DataError(f"{where} has no turn before the assistant's")
    if native:
        return {"prompt": full[:last], "completion": [full[last]], "tools": record.tools}
    rendered = fallback_messages(full[: last + 1], record.tools)
    return {"prompt": rendered[:-1], "completion": [rendered[-1]]}


def _load(spec: DataSpec) -> Dataset:
    return load_dataset(spec.path, spec.format)


def common_system_message(rows: Sequence[dict[str, Any]]) -> str | None:
    """The system message every prompt starts with, if there is one: the System must send it at inference too."""
    firsts = {r["prompt"][0]["content"] if r["prompt"][0]["role"] == "system" else None for r in rows if "prompt" in r}
    return firsts.pop() if len(firsts) == 1 else None


# --- parameter strategies -----------------------------------------------------------------------------------


def top_blocks_targets(model: Any, strategy: Strategy) -> dict[str, Any]:
    """LoRA options that put adapters in the last ``train_top_n_blocks`` decoder blocks only (else the recipe's).

    Nothing below the lowest adapter needs a gradient, so autograd stops there: with adapters in the top quarter,
    a backward pass costs about a quarter of the full one. PEFT takes ``layers_to_transform`` only with named
    targets, so "all-linear" becomes the names of the linear layers inside the blocks.
    """
    if strategy.train_top_n_blocks is None or model is None:
        return {"target_modules": strategy.target_modules}
    import torch

    blocks: set[int] = set()
    names: set[str] = set()
    for name, module in model.named_modules():
        if (m := _BLOCK.search(f"{name}.")) and isinstance(module, torch.nn.Linear):
            blocks.add(int(m.group(1)))
            names.add(name.rsplit(".", 1)[-1])
    if not blocks:
        raise ConfigError("train_top_n_blocks: could not find numbered decoder blocks in this model")
    if strategy.train_top_n_blocks > len(blocks):
        raise ConfigError(f"train_top_n_blocks={strategy.train_top_n_blocks}, the model has {len(blocks)} blocks")
    wanted = sorted(names) if strategy.target_modules == "all-linear" else strategy.target_modules
    top = sorted(blocks)[-strategy.train_top_n_blocks :]
    return {"target_modules": wanted, "layers_to_transform": top}


def peft_config(strategy: Strategy, model: Any = None, task_type: str = "CAUSAL_LM") -> Any:
    """The PEFT config for a PEFT method; None for full and freeze. ``model`` resolves ``train_top_n_blocks``."""
    import peft

    m = strategy.method
    if m in LORA_FAMILY:
        return peft.LoraConfig(
            r=strategy.r,
            lora_alpha=strategy.alpha,
            lora_dropout=strategy.dropout,
            use_dora=m == "dora",  # Liu et al. 2024: magnitude + direction
            use_rslora=m == "rslora",  # Kalajdzievski 2023: scale alpha/sqrt(r), stable at high rank
            task_type=task_type,
            **top_blocks_targets(model, strategy),
        )
    if m == "ia3":
        targets = None if strategy.target_modules == "all-linear" else strategy.target_modules
        return peft.IA3Config(target_modules=targets, task_type="CAUSAL_LM")
    if m == "prompt_tuning":
        return peft.PromptTuningConfig(num_virtual_tokens=strategy.num_virtual_tokens, task_type="CAUSAL_LM")
    if m == "prefix_tuning":
        return peft.PrefixTuningConfig(num_virtual_tokens=strategy.num_virtual_tokens, task_type="CAUSAL_LM")
    if m == "p_tuning":
        # Liu et al. 2021: the virtual tokens come out of a small MLP encoder (PEFT's default reparameterisation).
        return peft.PromptEncoderConfig(num_virtual_tokens=strategy.num_virtual_tokens, task_type="CAUSAL_LM")
    if m == "loha":  # Hyeon-Woo et al. 2022: ΔW = (B1 A1) ⊙ (B2 A2), rank r² from 2r parameters per side
        return peft.LoHaConfig(
            r=strategy.r, alpha=strategy.alpha, target_modules=strategy.target_modules, task_type="CAUSAL_LM"
        )
    if m == "lokr":  # LyCORIS: ΔW = W1 ⊗ (B A), a Kronecker product
        return peft.LoKrConfig(
            r=strategy.r, alpha=strategy.alpha, target_modules=strategy.target_modules, task_type="CAUSAL_LM"
        )
    if m == "oft":
        # Qiu et al. 2023: W' = R W with R block-diagonal orthogonal; PEFT's default block size (32) divides the
        # widths of Llama-family layers (SmolLM2: 576, 192, 1536).
        return peft.OFTConfig(target_modules=strategy.target_modules, task_type="CAUSAL_LM")
    if m == "vera":
        # Kopiczko et al. 2024: frozen random A, B shared by every layer, trained scaling vectors; PEFT's r=256,
        # since the rank costs no trainable parameters beyond one vector of that length per layer.
        return peft.VeraConfig(target_modules=strategy.target_modules, task_type="CAUSAL_LM")
    return None


def freeze_parameters(model: Any, strategy: Strategy) -> list[str]:
    """``freeze``: only the top N blocks (or the named modules) keep ``requires_grad``; returns their names."""
    names = [n for n, _ in model.named_parameters()]
    if strategy.train_top_n_blocks is not None:
        blocks = sorted({int(m.group(1)) for n in names if (m := _BLOCK.search(n))})
        if not blocks:
            raise ConfigError("freeze: could not find numbered decoder blocks in this model")
        if strategy.train_top_n_blocks > len(blocks):
            raise ConfigError(f"freeze: train_top_n_blocks={strategy.train_top_n_blocks}, the model has {len(blocks)}")
        top = set(blocks[-strategy.train_top_n_blocks :])
        chosen = {n for n in names if (m := _BLOCK.search(n)) and int(m.group(1)) in top}
    else:
        wanted = strategy.trainable_modules or []
        # Match whole dotted components: "mlp" selects `layers.1.mlp.up_proj.weight`, not `mlp_norm`.
        chosen = {n for n in names if any(f".{w}." in f".{n}" for w in wanted)}
        if not chosen:
            raise ConfigError(f"freeze: no parameter name contains any of {wanted}", hint=f"e.g. {names[:4]}")
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    return sorted(chosen)


# --- checkpoints --------------------------------------------------------------------------------------------


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The highest ``checkpoint-N`` that is complete. The Trainer writes ``trainer_state.json`` last, so a folder
    without it (or with a torn one: the disk filled up mid-write) was cut short and is ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and complete_checkpoint(p)
    ]
    return max(done)[1] if done else None


# --- callbacks ----------------------------------------------------------------------------------------------


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


def build_trainer(
    recipe: SFTRecipe, run: Run, callbacks: Sequence[Any] = ()
) -> tuple[Any, System | None, str, PromptSpec | None]:
    """Everything up to ``trainer.train()``: returns (trainer, base System, model spec, the output prompt)."""
    import torch
    from transformers import PrinterCallback, set_seed

    from tailorlm.models.load import load_model

    t, strategy = recipe.training, recipe.strategy
    if strategy.method == "qlora":
        from tailorlm.train.quantized import require_qlora

        require_qlora()  # before any data is read or model loaded: this machine cannot run 4-bit kernels
    base = System.load(recipe.system) if recipe.system else None
    if base is not None and base.adapters:
        raise ConfigError("training on top of a System with adapters is not supported yet", hint="merge it first")
    model_spec = base.model if base else recipe.model

    # data
    train = _load(recipe.data)
    run.record_dataset("train", recipe.data.path, train.fingerprint, len(train))
    if recipe.eval_data is not None:
        held_out = _load(recipe.eval_data)
        run.record_dataset("eval", recipe.eval_data.path, held_out.fingerprint, len(held_out))
    elif recipe.eval_fraction > 0 and len(train) >= 10:
        train, held_out = train.split(recipe.eval_fraction, seed=t.seed)
    else:
        held_out = None
        if recipe.eval_fraction > 0:
            log.warning("only %d records: no eval split (needs at least 10)", len(train))
    prompt = base.prompt if base else None
    native = False
    if any(r.tools for r in train):
        from tailorlm.models.load import load_tokenizer
        from tailorlm.tools.calling import supports_native_tools

        native = supports_native_tools(load_tokenizer(model_spec))
    train_rows = to_trl_rows(train, prompt, native_tools=native)
    eval_rows = to_trl_rows(held_out, prompt, native_tools=native) if held_out is not None and len(held_out) else None
    if prompt is None and (system_message := common_system_message(train_rows)):
        prompt = PromptSpec(system=system_message)

    # model: the seed first, because PEFT initialises the adapter inside SFTTrainer's constructor.
    set_seed(t.seed)
    if strategy.method == "qlora":
        from tailorlm.train.quantized import load_4bit

        loaded = load_4bit(model_spec)  # NF4 weights on the GPU; SFTTrainer prepares it for k-bit training
    else:
        # A PEFT method never updates the base weights, so in bf16 training they are stored in bf16: half the
        # memory, and no fp32→bf16 cast of every weight on every step (autocast re-casts frozen fp32 weights).
        # The adapter stays fp32 (PEFT's autocast_adapter_dtype), as do full fine-tuning's master weights.
        frozen_bf16 = training_bf16(t.precision) and strategy.method in PEFT_METHODS
        loaded = load_model(model_spec, device="cpu", dtype=torch.bfloat16 if frozen_bf16 else torch.float32)
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    # A row longer than max_length is cut from the right, which removes its answer: the loss then has no target
    # (and an eval set of such rows has no eval_loss at all). Drop those rows and say how many.
    train_rows, longest = _fitting(train_rows, tokenizer, t.max_length, "training")
    if eval_rows is not None:
        eval_rows = _fitting(eval_rows, tokenizer, t.max_length, "eval")[0] or None
    peft_cfg = peft_config(strategy, loaded.model)
    if strategy.method == "freeze":
        trained = freeze_parameters(loaded.model, strategy)
        log.info("freeze: training %d parameter tensors", len(trained))

    import datasets

    trainable = (
        0 if strategy.method in PEFT_METHODS else sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    )  # an adapter's parameters and optimizer state are megabytes: only full and freeze training count here
    memory = memory_plan(run, t, loaded.model, longest=longest, trainable=trainable)
    args, extra = trainer_arguments(recipe, run, evaluating=eval_rows is not None, callbacks=callbacks, memory=memory)
    trainer = sft_trainer_class()(
        model=loaded.model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        eval_dataset=datasets.Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_cfg,
        callbacks=extra,
    )
    # disable_tqdm adds a PrinterCallback that prints every log dict; our run log and the CLI show them instead.
    trainer.remove_callback(PrinterCallback)
    if t.curriculum != "none":
        from tailorlm.train.curriculum import apply_curriculum

        apply_curriculum(trainer, t.curriculum, reverse=t.curriculum_reverse)
    return trainer, base, model_spec, prompt


MEMORY_PLAN = "memory-plan.json"
MEMORY_SETTINGS = ("batch_size", "grad_accum", "micro_batch_size", "activation_checkpointing", "memory_limit_gb")


def memory_plan(run: Run, t: Any, model: Any, *, longest: int, trainable: int) -> MemoryPlan:
    """The micro-batch and checkpointing of this run (train/memory.py), logged with the reason.

    A resumed run keeps the plan it started with (``memory-plan.json`` in the run), so that a resume on a machine
    with more or less memory free continues the same batches.
    """
    import psutil
    import torch

    from tailorlm.core.io import atomic_write_json

    asked = {k: getattr(t, k) for k in MEMORY_SETTINGS}
    saved = run.path / MEMORY_PLAN
    if saved.is_file():
        kept = json.loads(saved.read_text(encoding="utf-8"))
        if kept.pop("settings", None) == asked:  # a resume that changes them (an OOM hint) plans again
            plan = MemoryPlan(**kept)
            log.info("memory: %s (as planned when this run started)", plan.reason)
            return plan
    weight_bytes = next(iter(model.parameters())).element_size()
    plan = plan_memory(
        model.config,
        n_params=sum(p.numel() for p in model.parameters()),
        trainable=trainable,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        longest=longest,
        checkpointing=t.activation_checkpointing,
        micro_batch=t.micro_batch_size,
        budget_mb=t.memory_limit_gb * 1024 if t.memory_limit_gb else None,
        on_cpu=not torch.cuda.is_available(),
        weight_bytes=weight_bytes,
        resident_mb=psutil.Process().memory_info().rss / 2**20,  # model loaded, plus whatever the caller holds
    )
    log.info("memory: %s", plan.reason)
    atomic_write_json(saved, {**plan.as_dict(), "settings": asked})
    return plan


def trainer_arguments(
    recipe: Any,
    run: Run,
    *,
    evaluating: bool,
    callbacks: Sequence[Any] = (),
    memory: MemoryPlan | None = None,
    **overrides: Any,
) -> tuple[Any, list[Any]]:
    """The ``SFTConfig`` and callbacks of every recipe that trains through TRL (SFT, pretrain): checkpoints in
    ``run/checkpoints``, logging into the run, evaluation, best-model and early stopping from ``recipe.training``.

    ``memory`` sets the micro-batch, accumulation and checkpointing (else the recipe's batch_size and grad_accum as
    given). ``overrides`` replace single ``SFTConfig`` fields (pretraining passes its own packing settings).
    """
    import torch
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig

    t, strategy = recipe.training, recipe.strategy
    save_steps = t.save_steps or t.eval_steps
    if evaluating and save_steps % t.eval_steps:
        raise ConfigError(f"training.save_steps={save_steps} must be a multiple of eval_steps={t.eval_steps}")
    if t.early_stopping_patience and not evaluating:
        log.warning("early stopping is off: there is no eval data to stop on")
    settings: dict[str, Any] = dict(
        output_dir=str(run.path / CHECKPOINT_DIR),
        learning_rate=recipe.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=memory.micro_batch if memory else t.batch_size,
        per_device_eval_batch_size=memory.micro_batch if memory else t.batch_size,
        gradient_accumulation_steps=memory.grad_accum if memory else t.grad_accum,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio (warmup_ratio is gone)
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        max_length=t.max_length,
        packing=t.packing,
        # A curriculum fixes the order (train/curriculum.py); else batches of similar length cut the padding.
        train_sampling_strategy=_sampling(t),
        completion_only_loss=None,  # TRL: True for prompt-completion rows, False for text
        # SFTConfig defaults bf16 and checkpointing to True; both are speed choices for the throughput work to make.
        # bf16 autocast where the hardware has it (QLoRA always: its 4-bit base is dequantized to bf16).
        bf16=strategy.method == "qlora" or training_bf16(t.precision),
        use_cpu=not torch.cuda.is_available(),  # else transformers refuses bf16 without a GPU
        # transformers 5 name; TRL still defaults the old alias to True. Off unless memory requires it (OOM hint).
        activation_checkpointing=memory.checkpointing if memory else bool(t.activation_checkpointing),
        logging_steps=1,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=evaluating,
        metric_for_best_model="eval_loss" if evaluating else None,
        greater_is_better=False if evaluating else None,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only warns
        dataset_num_proc=None,
    )
    args = SFTConfig(**(settings | overrides))
    extra = [_run_callback(run), *callbacks]
    if t.early_stopping_patience and evaluating:
        extra.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    return args, extra


def _sampling(t: Any) -> str:
    if t.curriculum != "none":
        return "sequential"
    # Packed rows all have max_length tokens already; grouping only matters for padded batches.
    return "group_by_length" if t.group_by_length and not t.packing else "random"


def fit(recipe: SFTRecipe, run: Run, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> System:
    """Train per ``recipe`` inside ``run``; save the adapter (or model) and ``system.yaml`` under ``run.artifacts``.

    ``resume`` continues from the run's latest complete checkpoint (optimizer, scheduler, RNG and data position
    included), so the result matches an uninterrupted run.
    """
    trainer, base, model_spec, prompt = build_trainer(recipe, run, callbacks)
    return train_and_save(recipe, run, trainer, base=base, model_spec=model_spec, prompt=prompt, resume=resume)


def train_and_save(
    recipe: Any,
    run: Run,
    trainer: Any,
    *,
    base: System | None,
    model_spec: str,
    prompt: PromptSpec | None,
    resume: bool = False,
    evaluate: Callable[[Any], dict[str, Any]] | None = None,
) -> System:
    """Everything after ``build_trainer``, shared by every recipe that trains through a TRL trainer (SFT, pretrain):
    train (or resume), write metrics.json, save the adapter or model and system.yaml, score the canaries.

    ``recipe`` is an ``SFTRecipe`` or a recipe with the same ``name``, ``system``, ``strategy``, ``training``,
    ``canaries`` and ``learning_rate``. ``evaluate(trainer)`` returns the caller's own metrics of the trained model,
    in place of the Trainer's final ``eval_loss``.
    """
    import torch

    checkpoint = latest_checkpoint(run.path / CHECKPOINT_DIR) if resume else None
    if resume and checkpoint is None:
        log.warning("no complete checkpoint in %s: training from the start", run.path / CHECKPOINT_DIR)
    if checkpoint is not None:
        # The Trainer reads optimizer/scheduler/RNG state with torch.load(weights_only=True); the weights must be
        # safetensors like every other load (see models/weights.py).
        from tailorlm.models.weights import refuse_pickle_weights

        refuse_pickle_weights(checkpoint, kind="checkpoint", depth=0)
    # Resumed: count only this session's tokens for the speed (read now: rotation may delete the checkpoint).
    tokens_before = _checkpoint_tokens(checkpoint)
    start = time.perf_counter()
    # A full disk (checkpoint save) or an OOM (a step) ends with what happened and how to resume, not a traceback.
    with guard_resources(run.path, recipe.training, "training (steps and checkpoints)"):
        if checkpoint is not None and _trained_to_the_end(checkpoint, trainer):
            # Killed after its last checkpoint (during the final save): nothing is left to train. The Trainer's
            # resume loop would take one more step before it checks max_steps, so load the checkpoint instead.
            training_loss = _restore_finished(trainer, checkpoint)
        else:
            training_loss = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).training_loss
    seconds = time.perf_counter() - start
    tokens = trainer.state.num_input_tokens_seen - tokens_before

    metrics: dict[str, Any] = {
        "train_loss": training_loss,
        "steps": trainer.state.global_step,
        "train_seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        # ru_maxrss is in KiB on Linux: the process's peak resident memory, model + optimizer + activations.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "method": recipe.strategy.method,
        "learning_rate": recipe.learning_rate,
        # Processes that trained together (DDP/FSDP/DeepSpeed under `--launcher accelerate`); 1 otherwise.
        "world_size": trainer.args.world_size,
    }
    if torch.cuda.is_available():
        metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if evaluate is not None:  # the caller's evaluation replaces the Trainer's (pretrain: exact perplexity)
        metrics.update(evaluate(trainer))
    elif trainer.eval_dataset is not None:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    run.write_metrics(metrics)

    # save: adapter-only PEFT folder (loadable by plain peft and vLLM), or the whole model. Every rank takes part
    # (FSDP/ZeRO-3 gather the weights); rank 0 writes into a temporary folder renamed into place when complete,
    # and system.yaml (atomic) comes last, so a killed save never leaves a complete-looking System.
    main = trainer.is_world_process_zero()
    out = run.artifacts / (ADAPTER_DIR if recipe.strategy.method in PEFT_METHODS else MODEL_DIR)
    with guard_resources(run.path, recipe.training, "saving the final artifacts"), final_directory(out, main) as tmp:
        trainer.save_model(str(tmp))
    if not main:
        return System(model=model_spec)  # the other ranks' answer is unused: rank 0 writes the System
    if recipe.strategy.method in PEFT_METHODS:
        system = System(model=model_spec, adapters=[AdapterSpec(path=str(out), name=recipe.name)])
    else:
        system = System(model=str(out))
    system = system.model_copy(
        update={
            "name": recipe.name,
            "prompt": prompt,
            "generation": base.generation if base else system.generation,
            "parent": recipe.system or model_spec,
            "created_by": run.id,
        }
    )
    with guard_resources(run.path, recipe.training, "saving the final artifacts"):
        system.save(run.artifacts)
    run.logger.info("saved %s and system.yaml in %s", out.name, run.artifacts)
    if recipe.canaries.enabled:
        from tailorlm.eval.canary_check import compare_systems
        from tailorlm.models.default import cache_root

        # Before = the weights training started from (the base model, or the base System's adapters).
        before = System(model=model_spec, adapters=base.adapters if base else [])
        canaries = compare_systems(recipe.canaries, before, system, cache_root())
        metrics["canaries"] = canaries
        run.write_metrics(metrics)
        if not canaries.get("promotable", True):
            run.logger.warning(
                "forgetting: canary drop %.3f exceeds max_drop %s", canaries["drop"], recipe.canaries.max_drop
            )
    write_model_card(run, recipe, system, metrics, model_spec)
    return system


def _fitting(
    rows: list[dict[str, Any]], tokenizer: Any, max_length: int, what: str
) -> tuple[list[dict[str, Any]], int]:
    """The rows whose whole conversation fits ``max_length`` tokens, and the longest of them in tokens (it sets the
    peak memory); a clear error when none fits."""
    kept, longest = [], 1
    for row in rows:
        if "prompt" not in row:
            kept.append(row)  # text rows are packed or cut without losing a target
            longest = max_length
            continue
        ids = tokenizer.apply_chat_template([*row["prompt"], *row["completion"]], tokenize=True)
        n = len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        if n <= max_length:
            kept.append(row)
            longest = max(longest, n)
    dropped = len(rows) - len(kept)
    if dropped and not kept:
        raise ConfigError(
            f"every {what} record is longer than training.max_length={max_length} tokens",
            hint="raise training.max_length, or shorten the records",
        )
    if dropped:
        log.warning(
            "%d of %d %s records exceed max_length=%d tokens and are skipped", dropped, len(rows), what, max_length
        )
    return kept, longest


def _trained_to_the_end(checkpoint: Path, trainer: Any) -> bool:
    """Whether ``checkpoint`` already holds every step this training will take: the recipe's max_steps as given now
    (a resume may raise it), else the step count the Trainer computed from the epochs when it saved."""
    import json

    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    total = trainer.args.max_steps if trainer.args.max_steps > 0 else int(state.get("max_steps") or 0)
    return total > 0 and int(state["global_step"]) >= total


def _restore_finished(trainer: Any, checkpoint: Path) -> float:
    """Load a checkpoint taken at the last step into ``trainer`` (weights and state) without training; return the
    mean training loss its log holds, as ``trainer.train`` would have reported it."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))  # the Trainer's own loader (safetensors, adapters included)
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    losses = [float(r["loss"]) for r in trainer.state.log_history if "loss" in r]
    return sum(losses) / len(losses) if losses else float("nan")


def _checkpoint_tokens(checkpoint: Path | None) -> int:
    import json

    if checkpoint is None:
        return 0
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("num_input_tokens_seen") or 0)
