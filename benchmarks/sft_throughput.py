"""LoRA SFT speed and memory of the default model: ``tailor train sft`` against two plain TRL baselines.

Data: XQuAD-en chat records (CC BY-SA 4.0): the user turn is the paragraph and the question, the assistant turn the
answer. Every side trains one epoch over the same records (so each sees the same real tokens), batch 4, with the
baselines' adapter: PEFT ``LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")`` (dropout 0, PEFT's default).

- **baseline** (TRL defaults): ``SFTTrainer`` + that ``LoraConfig``, ``SFTConfig(bf16=False)`` (TRL's default bf16
  refuses to start on a CPU), everything else TRL's default (activation checkpointing on, learning rate 2e-5).
- **baseline_bf16**: the same with ``bf16=True, use_cpu=True``: the best plain setting a user finds.
- **ours**: ``tailor train sft`` with the same adapter and our defaults: where bf16 is native, bf16 autocast over bf16
  frozen base weights (fp32 adapter and optimizer), else fp32; length-grouped batches; the micro-batch and
  checkpointing from the memory plan (train/memory.py: on a CPU, long rows one or two per pass with gradient
  accumulation, the same effective batch); LoRA learning rate 2e-4.
- **baseline_bf16** is skipped on a CPU without native bf16, where it is emulated and several times slower.

Speed is real (non-pad) tokens per second of ``trainer.train()``, counted by the Trainer
(``include_num_input_tokens_seen="non_padding"``). Each side runs in its own process, so its peak resident memory
(``ru_maxrss``) is its own. Eval loss is computed the same way for all three after training: the saved adapter on the
fp32 base model, mean loss over the answer tokens of held-out records, in fp32. The last line is one JSON object.

    python benchmarks/sft_throughput.py            # 192 training records (48 steps per side)
    python benchmarks/sft_throughput.py --quick    # 16 records (4 steps per side), under 3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tailorlm.core.cpu import machine

ROOT = Path(__file__).resolve().parents[1]
XQUAD = ROOT.parent / "shared/data/xquad/xquad.en.json"
BATCH = 4


def records(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Chat records (paragraph + question → answer); eval records come from other articles than training's."""
    data = json.loads(XQUAD.read_text(encoding="utf-8"))["data"]
    rng = random.Random(seed)
    rows: list[tuple[int, dict]] = []
    for a_i, article in enumerate(data):
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                user = f"{para['context']}\n\nQuestion: {qa['question']}\nAnswer with a short phrase."
                messages = [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": qa["answers"][0]["text"]},
                ]
                rows.append((a_i, {"messages": messages}))
    train = [r for a, r in rows if a % 4 != 3]
    held = [r for a, r in rows if a % 4 == 3]
    return rng.sample(train, n_train), rng.sample(held, n_eval)


def trl_rows(recs: list[dict]) -> list[dict]:
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in recs]


def run_trl(train: list[dict], out: Path, bf16: bool) -> dict[str, Any]:
    import datasets
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tailorlm.models.default import ensure_default_model

    path = str(ensure_default_model())
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    args = SFTConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        bf16=bf16,
        use_cpu=bf16,  # without it TRL refuses bf16 on a machine without a GPU
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",  # the count the speed is measured in; changes no training
    )
    lora = peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(trl_rows(train)),
        processing_class=tokenizer,
        peft_config=lora,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(out / "adapter")
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": seconds, "adapter": str(out / "adapter")}


def run_ours(train: list[dict], out: Path) -> dict[str, Any]:
    from tailorlm.core.config import load_config
    from tailorlm.core.run import Run
    from tailorlm.train.sft import SFTRecipe, fit

    data = out / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
    overrides = [
        f"data.path={data}",
        "eval_fraction=0",
        "canaries.enabled=false",
        "strategy.dropout=0",  # the baselines' adapter exactly: PEFT's LoraConfig default dropout is 0
        "training.epochs=1",
        f"training.batch_size={BATCH}",
        "training.save_steps=100000",
    ]
    recipe = load_config(SFTRecipe, ROOT / "recipes/sft-lora.yaml", overrides)
    with Run.create("bench", root=out / "runs", config=recipe, seed=0, kind="sft") as run:
        system = fit(recipe, run)
    metrics = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    memory = json.loads((run.path / "memory-plan.json").read_text(encoding="utf-8"))
    return {
        "tokens": metrics["tokens"],
        "seconds": metrics["train_seconds"],
        "adapter": system.adapters[0].path,
        "memory_plan": {k: memory[k] for k in ("micro_batch", "grad_accum", "checkpointing", "estimate_mb")},
    }


def eval_loss(adapter: str, held: list[dict]) -> float:
    """Mean loss over the answer tokens of ``held``: the adapter on the fp32 base, the same code for every side."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailorlm.models.default import ensure_default_model

    path = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), adapter).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for r in held:
            prompt = tokenizer.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(r["messages"], tokenize=False)
            ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
            n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            labels = ids.clone()
            labels[:, :n_prompt] = -100
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


def side(name: str, n_train: int, n_eval: int, out: Path) -> dict[str, Any]:
    train, held = records(n_train, n_eval)
    out.mkdir(parents=True, exist_ok=True)
    result = run_ours(train, out) if name == "ours" else run_trl(train, out, bf16=name == "baseline_bf16")
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the eval model loads
    result["eval_loss"] = eval_loss(result.pop("adapter"), held)
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 training records instead of 192.")
    parser.add_argument("--records", type=int, help="Training records (a multiple of 4).")
    parser.add_argument("--eval-records", type=int, default=64)
    parser.add_argument("--side", choices=["ours", "baseline", "baseline_bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_train = args.records or (16 if args.quick else 192)
    n_eval = 8 if args.quick else args.eval_records
    if args.side:  # child process: one side, its figures as JSON on the last line
        print(json.dumps(side(args.side, n_train, n_eval, args.out)))
        return
    if not XQUAD.is_file():
        sys.exit(f"needs {XQUAD} (XQuAD-en from ../shared/data)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, dict[str, Any]] = {}
    info = machine()
    # Where bf16 is emulated (AVX2-only CPUs), the bf16 baseline runs several times slower than fp32 (over 15
    # minutes for 4 steps): no user would pick it there, so it is skipped and the JSON says so.
    sides = ("baseline", "baseline_bf16", "ours") if info["native_bf16"] else ("baseline", "ours")
    with tempfile.TemporaryDirectory() as tmp:
        for name in sides:
            out = Path(tmp) / name
            out.mkdir()
            cmd = [sys.executable, __file__, "--side", name, "--out", str(out), "--records", str(n_train)]
            cmd += ["--eval-records", str(n_eval)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[name]
            print(
                f"{name:14s} {r['tokens_per_s']:7.1f} real tokens/s  {r['tokens']:6d} tokens in {r['seconds']:6.1f} s"
                f"  peak {r['peak_mb']:6.0f} MB  eval loss {r['eval_loss']:.4f}",
                flush=True,
            )
    ours, base = results["ours"], results["baseline"]
    figures: dict[str, Any] = {
        "machine": info,
        "ours_precision": info["training_precision_auto"],
        "ours_memory_plan": ours["memory_plan"],
        "records": n_train,
        "ours_tokens_per_s": round(ours["tokens_per_s"], 1),
        "baseline_tokens_per_s": round(base["tokens_per_s"], 1),
        "ratio": round(ours["tokens_per_s"] / base["tokens_per_s"], 2),
        "ours_peak_mb": round(ours["peak_mb"]),
        "baseline_peak_mb": round(base["peak_mb"]),
        "memory_ratio": round(ours["peak_mb"] / base["peak_mb"], 2),
        "ours_eval_loss": round(ours["eval_loss"], 4),
        "baseline_eval_loss": round(base["eval_loss"], 4),
    }
    if bf16 := results.get("baseline_bf16"):
        figures |= {
            "baseline_bf16_tokens_per_s": round(bf16["tokens_per_s"], 1),
            "ratio_vs_bf16": round(ours["tokens_per_s"] / bf16["tokens_per_s"], 2),
            "baseline_bf16_peak_mb": round(bf16["peak_mb"]),
            "baseline_bf16_eval_loss": round(bf16["eval_loss"], 4),
        }
    else:
        figures["baseline_bf16"] = f"skipped: no native bf16 on this CPU ({info['model']}, {info['isa']})"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
