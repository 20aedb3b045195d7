"""DPO speed and memory on the default model: ``tailor train dpo`` against TRL's ``DPOTrainer`` with its defaults.

Data: Anthropic HH-RLHF harmless-base pairs (MIT; ``../shared/data/hh_rlhf``), read by our ``hh`` format, the oldest
exchanges dropped to fit 384 tokens, the same pairs on both sides. Both train the same LoRA adapter
(``LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")``) with batch 4 for the same number of steps.

- **baseline** (TRL defaults): ``DPOTrainer`` + that ``LoraConfig`` + ``DPOConfig(bf16=False, use_cpu=True)``: the
  reference is the adapter switched off at every step, activation checkpointing on (TRL's default), TRL's fused LM
  head (which off GPUs scores every position of the batch).
- **ours**: ``tailor train dpo`` with the same adapter: the reference scored once before training
  (``precompute_ref``), the plain LM head on the answers' positions only (``train/align/cpu_head.py``), no
  checkpointing, the micro-batch chosen for two cores.

Speed is pairs per second from the model load to the last step (the reference precompute included). Each side
runs in its own process, so its peak resident memory (``ru_maxrss``) is its own. The last line is one JSON object.

    python benchmarks/dpo_throughput.py            # 25 steps per side
    python benchmarks/dpo_throughput.py --quick    # 3 steps per side, under 3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared/data/hh_rlhf/harmless_base_test.jsonl.gz"
BATCH = 4
MAX_LENGTH = 384


def pairs(n: int) -> list[dict]:
    from tailorlm.data import load_dataset
    from tailorlm.models.default import ensure_default_model
    from tailorlm.models.load import load_tokenizer
    from tailorlm.train.align.data import fit_rows, to_rows

    data = load_dataset(HH, "hh", kind="preference", strict=False)
    rows = to_rows(data.split(eval_size=min(len(data), 2 * n), seed=0)[1])
    return fit_rows(rows, load_tokenizer(str(ensure_default_model())), MAX_LENGTH, "benchmark")[0][:n]


def run_trl(rows: list[dict], steps: int, out: Path) -> dict[str, Any]:
    import datasets
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tailorlm.models.default import ensure_default_model

    path = str(ensure_default_model())
    start = time.perf_counter()  # both sides count their model load (about a second from the cache)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(output_dir=str(out), bf16=False, use_cpu=True, per_device_train_batch_size=BATCH,
                       max_steps=steps, max_length=MAX_LENGTH, report_to="none", save_strategy="no",
                       disable_tqdm=True, logging_steps=1),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )  # fmt: skip
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"seconds": seconds, "pairs": steps * BATCH, "first_loss": losses[0], "last_loss": losses[-1]}


def run_ours(rows: list[dict], steps: int, out: Path) -> dict[str, Any]:
    from tailorlm.core.config import load_config
    from tailorlm.core.run import Run
    from tailorlm.train.align.config import DpoRecipe
    from tailorlm.train.align.dpo import build_dpo_trainer

    data = out / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_config(
        DpoRecipe, ROOT / "recipes/dpo-lora.yaml",
        [f"data.path={data}", "data.format=preference", "eval_fraction=0", f"training.max_steps={steps}",
         f"training.batch_size={BATCH}", f"training.max_length={MAX_LENGTH}", "strategy.dropout=0",
         "canaries.enabled=false"],
    )  # fmt: skip
    with Run.create("bench", root=out / "runs", config=recipe, kind="dpo") as run:
        from tailorlm.models.default import ensure_default_model

        ensure_default_model()
        start = time.perf_counter()
        trainer = build_dpo_trainer(recipe, run)[0]
        trainer.train()
        seconds = time.perf_counter() - start
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"seconds": seconds, "pairs": steps * BATCH, "first_loss": losses[0], "last_loss": losses[-1]}


def side(name: str, steps: int, out: Path) -> dict[str, Any]:
    rows = pairs(steps * BATCH)
    result = (run_trl if name == "baseline" else run_ours)(rows, steps, out)
    result["pairs_per_s"] = result["pairs"] / result["seconds"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 steps per side")
    parser.add_argument("--side", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side, in its own process
        print(json.dumps(side(args.side, args.steps, args.out)))
        return
    if not HH.is_file():
        sys.exit(f"needs {HH} (the shared data folder beside the repository)")
    import torch  # noqa: F401  (machine() reads torch's thread count and CPU capability)

    from tailorlm.core.cpu import machine

    steps = 3 if args.quick else 25
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("baseline", "ours"):
            out = Path(tmp) / name
            out.mkdir()
            cmd = [sys.executable, __file__, "--side", name, "--steps", str(steps), "--out", str(out)]
            env = {**os.environ, "RUST_LOG": "error"}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{name}: {results[name]['pairs_per_s']:.3f} pairs/s, peak RSS {results[name]['peak_rss_mb']:.0f} MB"
            )
    summary = {
        "benchmark": "dpo_throughput",
        "quick": args.quick,
        "steps": steps,
        "batch": BATCH,
        "max_length": MAX_LENGTH,
        "machine": machine(),
        "ours": results["ours"],
        "baseline": results["baseline"],
        "ratio": results["ours"]["pairs_per_s"] / results["baseline"]["pairs_per_s"],
        "memory_ratio": results["ours"]["peak_rss_mb"] / results["baseline"]["peak_rss_mb"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
